// Package adapt adapts a frozen, quantized base model on the device:
// LoRA and prefix adapters in float32, trained with MeZO (zeroth-order
// SGD: forward passes only, the memory of inference), stored as GGUF
// adapter files, and served per sequence through the engine's hooks.
//
//   - LoRA: y = W·x + (alpha/r)·B·(A·x) on chosen projections (default q
//     and v). Files use llama.cpp's layout (general.type=adapter,
//     adapter.type=lora, adapter.lora.alpha, blk.N.<proj>.weight.lora_a
//     with ggml dims [in, r] and .lora_b with dims [r, out]), so llama.cpp
//     loads ours and we load its. A Set, installed as the engine's
//     Hooks.Delta, attaches adapters per sequence: one batch mixes
//     sequences with different adapters and with none. MergeLoRA folds
//     adapters into a model file.
//   - Prefix: per-layer K/V rows placed before a sequence's tokens
//     (engine.PrefixProvider), initialised from the K/V of real tokens;
//     the tokens keep positions from 0. Files are our own layout,
//     described on SavePrefix. Load reads either kind of file.
//   - MeZO: θ += εz, ℓ₊, θ −= 2εz, ℓ₋, θ += εz, g = (ℓ₊ − ℓ₋)/2ε,
//     θ −= η(g·z + λθ), with z regenerated from (seed, tensor, element) by
//     a counter-based generator; the loss is the cross-entropy of
//     completion tokens only, over a batch of examples run together.
//     Checkpoints (zstd) resume a run exactly.
//   - GradTrainer: Adam (AdamW decay, L2) on the exact gradient of the same
//     loss for a delta on one layer's MLP down-projection (a full ΔW,
//     NewFullDelta, or a low-rank pair): the layers below run once per
//     example in the engine; the layers above run forward and backward in
//     a float32 copy of them (attention with RoPE and GQA, RMSNorm,
//     SwiGLU, output). Its state (AdamState) resumes exactly.
//   - Scorer: the loss, greedy continuations and samples of examples
//     with an adapter or none, in batches whose logits stay small.
//   - Knowledge edits: EditTrainer runs LocFT-BF (edits as examples with
//     the loss on the target, breadth-first epochs of MeZO over all of
//     them, a localized adapter from NewEditLoRA, a stop rule on every
//     edit's loss); EditEval measures EasyEdit's reliability,
//     generalization and locality against the base model.
package adapt
