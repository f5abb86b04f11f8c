#!/usr/bin/env bash
# Builds what tests/gpu/check.sh runs, for a GPU machine that has no Go:
# edgectl and the CUDA package's test binary (static Go, no cgo: purego
# opens the CUDA libraries there), and a copy of the shared fixtures.
#   tests/gpu/build.sh [DIR]   (default .gpu, which git ignores)
set -euo pipefail
cd "$(dirname "$0")/../.."
dir=${1:-.gpu}
mkdir -p "$dir/bin"
export CGO_ENABLED=0 GOOS=linux GOARCH=amd64
go build -trimpath -ldflags='-s -w' -o "$dir/bin/edgectl" ./cmd/edgectl
go test -c -trimpath -ldflags='-s -w' -o "$dir/bin/cuda.test" ./accel/cuda
fixtures=${EDGED_FIXTURES:-../shared/fixtures}
mkdir -p "$dir/fixtures/gguf" "$dir/fixtures/llama2c"
cp "$fixtures"/gguf/*.gguf "$fixtures"/gguf/*.golden.json "$fixtures"/gguf/*.f64ref.logits.f32 "$dir/fixtures/gguf/"
cp "$fixtures"/llama2c/aidreams260K.llamacpp.gguf "$fixtures"/llama2c/aidreams260K.greedy.json "$dir/fixtures/llama2c/"
gzip -9 -f "$dir/bin/edgectl" "$dir/bin/cuda.test"
du -sh "$dir"
