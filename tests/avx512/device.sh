#!/usr/bin/env bash
# The AVX-512 device check, for a machine whose CPU has AVX-512 VNNI (the
# hosts of the lent GPU machines, which have no Go and no network): runs
# quant's kernel tests natively, then times the avx512vnni tier against
# the avx2 tier (EDGED_CPU_KERNELS) with edgectl bench on the files of issue 4's
# acceptance, 2 threads, the two tiers back to back, twice. Prints a table
# last. About 5 minutes.
#   tests/avx512/device.sh [DIR]   (default .avx512)
# DIR holds bin/edgectl and bin/quant.test; where Go is installed the
# script builds them first (run it here, then there).
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
dir=${1:-.avx512}
out=${OUT:-/tmp/avx512}
models=/tmp/avx512/models
mkdir -p "$out" "$models"
if command -v go >/dev/null; then
	mkdir -p "$dir/bin"
	CGO_ENABLED=0 go build -trimpath -o "$dir/bin/edgectl" ./cmd/edgectl || exit 1
	CGO_ENABLED=0 go test -c -trimpath -o "$dir/bin/quant.test" ./quant || exit 1
fi
bin=$PWD/$dir/bin

grep -m1 'model name' /proc/cpuinfo
flags=$(grep -m1 '^flags' /proc/cpuinfo)
for f in avx2 avx512f avx512vl avx512_vnni avx_vnni; do
	case " $flags " in *" $f "*) echo "  $f: yes" ;; *) echo "  $f: no" ;; esac
done
want=
case " $flags " in *" avx512_vnni "*) case " $flags " in *" avx512vl "*) want=avx512vnni ;; esac ;; esac

# 1. Correctness: every kernel of every tier against the portable ones, and
# the VNNI tier against AVX2 bit for bit.
(cd quant && EDGED_CPU_KERNELS=$want EDGED_WANT_CPU_KERNELS=$want timeout 300 "$bin/quant.test" -test.v -test.timeout 290s \
	-test.run 'TestKernelFor|TestPickTier|TestVNNI|TestDot|TestMatVec|TestTile|TestQuantizeActivations') >"$out/tests.log" 2>&1
status=$?
grep -E '^(--- (FAIL|SKIP)|PASS|FAIL)|kernel tier' "$out/tests.log" | tail -20
echo "tests: exit $status"
[ -n "$want" ] || { echo "no AVX-512 VNNI here: nothing to time"; exit $status; }

# 2. Speed: each file with the two tiers back to back, twice.
printf '| model | tier | pp512 t/s | tg128 t/s |\n| --- | --- | ---: | ---: |\n' >"$out/table.md"
for spec in "smollm2-135m q4_0 3" "smollm2-135m q8_0 3" "tinyllama-1.1b q4_0 2"; do
	read -r shape type reps <<<"$spec"
	m=$models/$shape-$type.gguf
	[ -f "$m" ] || "$bin/edgectl" synth --shape "$shape" --type "$type" --out "$m" >/dev/null || continue
	for _ in 1 2; do
		for tier in avx2 avx512vnni; do
			json=$(EDGED_CPU_KERNELS=$tier timeout 200 "$bin/edgectl" bench -m "$m" -p 512 -n 128 -t 2 -r "$reps" --json 2>>"$out/bench.err")
			python3 - "$shape $type" "$json" >>"$out/table.md" <<'PY'
import json, sys
label, raw = sys.argv[1:3]
try:
    r = json.loads(raw)
    print(f"| {label} | {r['kernels']} | {r['pp']:.1f} ± {r['pp_std']:.1f} | {r['tg']:.1f} ± {r['tg_std']:.1f} |")
except Exception as e:
    print(f"| {label} | failed: {e} | | |")
PY
		done
	done
done
cat "$out/table.md"
exit $status
