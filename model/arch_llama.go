package model

// archLlama covers Llama 1/2/3, TinyLlama, SmolLM and Mistral-style models:
// adjacent-pair RoPE (GGUF converters permute q/k into that layout), no
// attention biases, optional output matrix (tied to the embedding when
// absent) and llama 3 frequency factors when rope_freqs is present.
var archLlama = Arch{Name: "llama"}
