package protocol

// Limits on request contents. They bound the memory one request can make
// the daemon spend before any model is involved; the model's context length
// bounds the token counts further.
const (
	// MaxBodyBytes is the largest request body accepted.
	MaxBodyBytes = 4 << 20
	// MaxTextBytes is the largest prompt, message content or tokenize text.
	MaxTextBytes = 2 << 20
	// MaxPromptTokens is the most token ids a prompt given as ids may hold.
	MaxPromptTokens = 1 << 20
	// MaxMessages is the most messages of one chat request.
	MaxMessages = 4096
	// MaxStops is the most stop strings; MaxStopBytes the longest.
	MaxStops     = 16
	MaxStopBytes = 256
	// MaxNameBytes is the longest model name (and message name).
	MaxNameBytes = 256
	// MaxPathBytes is the longest model path in a load request.
	MaxPathBytes = 4096
	// MaxMaxTokens is the largest max_tokens.
	MaxMaxTokens = 1 << 20
	// MaxSparsityLayers is the most layers a sparsity request names;
	// MaxMethodBytes the longest method name; MaxSparsityBlock the largest
	// LeMo block, a prompt's most tokens (a larger block would be one
	// block all the same).
	MaxSparsityLayers = 1024
	MaxMethodBytes    = 64
	MaxSparsityBlock  = MaxPromptTokens

	// Knowledge edits (Edit). MaxEditBytes is the largest edit message: it
	// holds every field at its limit with room for JSON escapes, and the
	// stream refuses larger ones at publish time. MaxEditIDBytes is the
	// longest id; MaxEditTextBytes the longest prompt, target, rephrase or
	// locality prompt (edits are facts, and the trainer runs every one of
	// them each epoch); MaxEditVariants the most rephrases, and the most
	// locality prompts, of one edit.
	MaxEditBytes     = 512 << 10
	MaxEditIDBytes   = 128
	MaxEditTextBytes = 4 << 10
	MaxEditVariants  = 32

	// MaxAdapterBytes is the largest adapter file POST /v1/adapters/add
	// takes (a LoRA of rank 64 on every projection of a 7B model is
	// about 600 MiB in f32).
	MaxAdapterBytes = 1 << 30
	// MaxSourceEdits is the most edit ids the source of a published
	// adapter version may list (a version holds every active edit of
	// its model).
	MaxSourceEdits = 1 << 14

	// Background jobs. MaxJobSteps is the most steps of one job;
	// MaxJobExamples the most training pairs, and MaxJobDataBytes the
	// largest data file, read into the job's directory; MaxJobSamples the
	// most samples of the base model a job draws (replay, init_ref) and
	// MaxJobSampleLen their longest (and the longest prefix);
	// MaxJobPerturbations the most perturbations of one MeZO step;
	// MaxLoRARank the largest LoRA rank; MaxJobLayers bounds a layer
	// index and the length of a layer list.
	MaxJobSteps         = 1 << 24
	MaxJobExamples      = 1 << 16
	MaxJobDataBytes     = 64 << 20
	MaxJobSamples       = 4096
	MaxJobSampleLen     = 4096
	MaxJobPerturbations = 64
	MaxLoRARank         = 4096
	MaxJobLayers        = 1024

	// Sampling ranges (inclusive).
	MaxTemperature   = 5.0
	MaxTopK          = 1 << 20
	MaxPenalty       = 2.0 // |presence_penalty|, |frequency_penalty|, as OpenAI
	MaxRepeatPenalty = 10.0
	MaxRepeatLastN   = 1 << 20
)
