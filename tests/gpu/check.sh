#!/usr/bin/env bash
# The GPU device check: on a machine with an NVIDIA GPU and no network,
# checks the CUDA backend against the CPU on every fixture model, then
# times decode and prefill on the real model shapes, and prints a short
# table last. Within 8 minutes on an H100/H200.
#   tests/gpu/check.sh [DIR]      (PEER=0 skips the PyTorch peer)
# DIR (default .gpu) holds bin/ and fixtures/ as tests/gpu/build.sh makes
# them; where Go is installed, the script builds them itself first.
set -uo pipefail
cd "$(dirname "$0")/../.."
dir=${1:-.gpu}
out=${OUT:-/tmp/gpucheck}
mkdir -p "$out" /tmp/gpucheck/bin /tmp/gpucheck/models
if command -v go >/dev/null; then
	tests/gpu/build.sh "$dir" >/dev/null || exit 1
fi
for f in edgectl cuda.test; do
	if [ -f "$dir/bin/$f.gz" ]; then gunzip -c "$dir/bin/$f.gz" >/tmp/gpucheck/bin/$f; else cp "$dir/bin/$f" /tmp/gpucheck/bin/; fi
	chmod +x /tmp/gpucheck/bin/$f
done
bin=/tmp/gpucheck/bin
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"

# 1. Correctness: every op and every fixture model against the CPU.
export EDGED_REQUIRE_GPU=1 EDGED_FIXTURES="$PWD/$dir/fixtures" EDGED_CUDA_CACHE=/tmp/gpucheck/kernels
timeout 300 "$bin/cuda.test" -test.v -test.run GPU -test.timeout 290s >"$out/correctness.log" 2>&1
status=$?
grep -E "^(=== RUN|--- (PASS|FAIL|SKIP)|PASS|FAIL)|rel L2|Error|cuda:|greedy" "$out/correctness.log" | grep -v "=== RUN" | tail -80
echo "correctness: exit $status"

# Backend choice: with no --backend, edgectl must pick the GPU, and the
# greedy text of aidreams260K must be the CPU's.
aid="$dir/fixtures/llama2c/aidreams260K.llamacpp.gguf"
picked=$("$bin/edgectl" bench -m "$aid" -p 16 -n 16 -r 1 --json 2>&1 | python3 -c 'import json,sys; print(json.load(sys.stdin)["device"])' 2>&1)
gpu_text=$("$bin/edgectl" run -m "$aid" -p "Once upon a time" -n 96 --temp 0 --json 2>&1)
cpu_text=$("$bin/edgectl" run --backend cpu -m "$aid" -p "Once upon a time" -n 96 --temp 0 --json 2>&1)
same=no
[ "$gpu_text" = "$cpu_text" ] && same=yes
echo "auto backend: $picked; aidreams greedy text same as the CPU's: $same"
[ "$same" = yes ] || status=1

# 2. Speed: edgectl bench on synthetic files in the real shapes, then the
# 1.1B model without CUDA graphs, and a per-kernel profile of it.
printf '| shape | type | MiB | pp512 t/s | tg128 t/s | copy GB/s | tg × size / bandwidth |\n| --- | --- | --- | --- | --- | --- | --- |\n' >"$out/table.md"
bench() { # label model "bench flags" [env...]
	local label=$1 m=$2 flags=$3 json
	shift 3
	json=$(env "$@" timeout 120 "$bin/edgectl" bench --backend cuda -m "$m" $flags -r 3 --json 2>>"$out/bench.err")
	echo "$json" >>"$out/bench.jsonl"
	python3 - "$label" "$json" >>"$out/table.md" <<'PY'
import json, sys
label, raw = sys.argv[1:3]
try:
    r = json.loads(raw)
    print(f"| {label} | {r['size']/2**20:.0f} | {r.get('pp', 0):.0f} ± {r.get('pp_std', 0):.0f} | {r.get('tg', 0):.1f} ± {r.get('tg_std', 0):.1f} | {r.get('bandwidth_gbs', 0):.0f} | {r.get('bound_fraction', 0):.3f} |")
except Exception as e:
    print(f"| {label} | failed: {e} | | | | |")
PY
}
for shape in smollm2-135m qwen2.5-0.5b tinyllama-1.1b; do
	for type in q4_0 q8_0; do
		m=/tmp/gpucheck/models/$shape-$type.gguf
		[ -f "$m" ] || "$bin/edgectl" synth --shape "$shape" --type "$type" --out "$m" >/dev/null || continue
		bench "$shape | $type" "$m" "-p 512 -n 128"
	done
done
m=/tmp/gpucheck/models/tinyllama-1.1b-q4_0.gguf
bench "tinyllama-1.1b | q4_0, graphs off" "$m" "-p 512 -n 128" EDGED_CUDA_GRAPHS=0
bench "tinyllama-1.1b | q4_0 @ d1536" "$m" "-p 512 -n 128 -d 1536"
EDGED_CUDA_PROFILE=1 timeout 120 "$bin/edgectl" bench --backend cuda -m "$m" -p 512 -n 32 -r 1 >"$out/profile.txt" 2>&1
tail -5 "$out/bench.err" 2>/dev/null

# 3. Peer: PyTorch (float16, transformers) in the same shapes, if present.
if [ "${PEER:-1}" = 1 ]; then
	timeout 150 python3 tests/gpu/peer.py >"$out/peer.md" 2>"$out/peer.err" || tail -3 "$out/peer.err"
fi

echo
echo "## edged CUDA ($(cut -d, -f1 "$out/gpu.txt"))"
cat "$out/table.md"
echo
cat "$out/peer.md" 2>/dev/null
head -30 "$out/profile.txt"
echo "auto backend: $picked; aidreams greedy text same as the CPU's: $same"
echo "correctness: exit $status (log: $out/correctness.log)"
exit $status
