package model

// archQwen2 is Qwen 2 / 2.5: q/k/v biases and NeoX-style RoPE.
var archQwen2 = Arch{Name: "qwen2", RopeNeoX: true, QKVBias: true}
