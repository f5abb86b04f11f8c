package daemon

import (
	"strings"

	"github.com/ardanlabs/jinja"

	"github.com/edged/edged/model"
	"github.com/edged/edged/protocol"
)

// DefaultChatTemplate renders chats for models whose file has no
// tokenizer.chat_template: ChatML, as llama.cpp falls back to. Generation
// also stops at "<|im_end|>" with it.
const DefaultChatTemplate = `{% for message in messages %}<|im_start|>{{ message.role }}
{{ message.content }}<|im_end|>
{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant
{% endif %}`

// defaultChatStop ends a turn of DefaultChatTemplate.
const defaultChatStop = "<|im_end|>"

// chatTemplate is a model's compiled chat template.
type chatTemplate struct {
	t          *jinja.Template
	err        error // why the model's template does not compile
	isDefault  bool
	bos, eos   string // texts of the special tokens, for the template
	hasBOSText bool
}

// newChatTemplate compiles the template in f, or the default. A template
// that does not compile is kept as an error for chat requests; the model
// still serves completions.
func newChatTemplate(f *model.File, tok *model.Tokenizer) *chatTemplate {
	ct := &chatTemplate{}
	if id := tok.BOS(); id >= 0 {
		ct.bos = tok.DecodeSpecial([]int32{id})
	}
	if id := tok.EOS(); id >= 0 {
		ct.eos = tok.DecodeSpecial([]int32{id})
	}
	src, err := f.String("tokenizer.chat_template")
	if err != nil || strings.TrimSpace(src) == "" {
		src, ct.isDefault = DefaultChatTemplate, true
	}
	ct.t, ct.err = jinja.Compile(src)
	return ct
}

// render turns messages into the prompt text. It reports whether the text
// already starts with the BOS token (then none is added when encoding).
func (ct *chatTemplate) render(msgs []protocol.Message) (text string, err error) {
	if ct.err != nil {
		return "", protocol.Errorf(protocol.CodeChatTemplate, "the model's chat template does not compile: %v", ct.err)
	}
	list := make([]any, len(msgs))
	for i, m := range msgs {
		msg := map[string]any{"role": m.Role, "content": string(m.Content)}
		if m.Name != "" {
			msg["name"] = m.Name
		}
		list[i] = msg
	}
	defer func() {
		if r := recover(); r != nil {
			err = protocol.Errorf(protocol.CodeChatTemplate, "the model's chat template failed: %v", r)
		}
	}()
	text, err = ct.t.Render(map[string]any{
		"messages":              list,
		"add_generation_prompt": true,
		"bos_token":             ct.bos,
		"eos_token":             ct.eos,
	})
	if err != nil {
		return "", protocol.Errorf(protocol.CodeChatTemplate, "the model's chat template failed: %v", err)
	}
	return text, nil
}

// encode tokenizes a rendered chat: special tokens are parsed, and BOS is
// added unless the template wrote it.
func encodeChat(tok *model.Tokenizer, ct *chatTemplate, text string) []int32 {
	add := ct.bos == "" || !strings.HasPrefix(text, ct.bos)
	return tok.Encode(text, add, true)
}

// stops returns the stop strings a chat adds to the request's.
func (ct *chatTemplate) stops() []string {
	if ct.isDefault {
		return []string{defaultChatStop}
	}
	return nil
}
