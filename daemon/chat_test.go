package daemon

import (
	"strings"
	"testing"

	"github.com/ardanlabs/jinja"

	"github.com/edged/edged/protocol"
)

func compiled(src string) *chatTemplate {
	ct := &chatTemplate{bos: "<s>", eos: "</s>"}
	ct.t, ct.err = jinja.Compile(src)
	return ct
}

func TestChatTemplates(t *testing.T) {
	msgs := []protocol.Message{{Role: "system", Content: "be brief"}, {Role: "user", Content: "hi"}}
	ct := compiled(DefaultChatTemplate)
	ct.isDefault = true
	got, err := ct.render(msgs)
	want := "<|im_start|>system\nbe brief<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
	if err != nil || got != want {
		t.Fatalf("default template: %q %v, want %q", got, err, want)
	}
	if s := ct.stops(); len(s) != 1 || s[0] != "<|im_end|>" {
		t.Errorf("default stops %v", s)
	}
	// A llama-2 style template that uses bos_token, loops and
	// raise_exception.
	llama := `{{ bos_token }}{% for m in messages %}{% if m.role == 'tool' %}{{ raise_exception('no tools') }}{% endif %}[{{ m.role | upper }}] {{ m.content | trim }}{% if not loop.last %} {% endif %}{% endfor %}`
	got, err = compiled(llama).render(msgs)
	if err != nil || got != "<s>[SYSTEM] be brief [USER] hi" {
		t.Fatalf("llama template: %q %v", got, err)
	}
	_, err = compiled(llama).render([]protocol.Message{{Role: "tool", Content: "x"}})
	if protocol.CodeOf(err) != protocol.CodeChatTemplate || !strings.Contains(err.Error(), "no tools") {
		t.Errorf("raise_exception: %v", err)
	}
	_, err = compiled("{% for m in messages %}").render(msgs)
	if protocol.CodeOf(err) != protocol.CodeChatTemplate {
		t.Errorf("broken template: %v", err)
	}
}
