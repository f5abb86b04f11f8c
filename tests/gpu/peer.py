"""PyTorch peer for tests/gpu/check.sh: Hugging Face transformers models in
the shapes of edgectl synth (float16, random weights, eager mode, batch 1),
timed as edgectl bench times: pp512 is one forward pass over 512 tokens,
tg128 is 128 tokens decoded one at a time with the KV cache. Prints a
markdown table."""

import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

# The shapes of ../shared/BASELINES.md (and edgectl synth).
SHAPES = {
    "smollm2-135m": (LlamaConfig, LlamaForCausalLM, dict(hidden_size=576, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3, intermediate_size=1536, vocab_size=49152, tie_word_embeddings=True)),
    "qwen2.5-0.5b": (Qwen2Config, Qwen2ForCausalLM, dict(hidden_size=896, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2, intermediate_size=4864, vocab_size=151936, tie_word_embeddings=True, rope_theta=1e6)),
    "tinyllama-1.1b": (LlamaConfig, LlamaForCausalLM, dict(hidden_size=2048, num_hidden_layers=22, num_attention_heads=32, num_key_value_heads=4, intermediate_size=5632, vocab_size=32000, tie_word_embeddings=False)),
}


def timed(fn):
    torch.cuda.synchronize()
    t = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return time.perf_counter() - t


@torch.no_grad()
def bench(cfg_cls, model_cls, kw):
    cfg = cfg_cls(max_position_embeddings=4096, rms_norm_eps=1e-5, **kw)
    with torch.device("cuda"):
        model = model_cls(cfg).to(torch.float16).eval()
    ids = torch.randint(0, kw["vocab_size"], (1, 512), device="cuda")
    model(ids)
    pp = 512 / min(timed(lambda: model(ids)) for _ in range(3))

    def decode():
        out = model(ids[:, :1], use_cache=True)
        past, tok = out.past_key_values, out.logits[:, -1:].argmax(-1)
        for _ in range(127):
            out = model(tok, past_key_values=past, use_cache=True)
            past, tok = out.past_key_values, out.logits[:, -1:].argmax(-1)

    decode()
    tg = 128 / min(timed(decode) for _ in range(2))
    bytes_ = sum(p.numel() * p.element_size() for p in model.parameters())
    del model
    torch.cuda.empty_cache()
    return pp, tg, bytes_


print(f"## PyTorch {torch.__version__} peer ({torch.cuda.get_device_name()}, float16, eager)")
print("| shape | MiB | pp512 t/s | tg128 t/s |")
print("| --- | --- | --- | --- |")
for name, (cfg_cls, model_cls, kw) in SHAPES.items():
    try:
        pp, tg, size = bench(cfg_cls, model_cls, kw)
        print(f"| {name} | {size / 2**20:.0f} | {pp:.0f} | {tg:.1f} |", flush=True)
    except Exception as e:  # a peer that fails must not stop the check
        print(f"| {name} | failed: {type(e).__name__}: {e} | | |", flush=True)
