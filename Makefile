# The test command of the README; .ci/run calls it.
.PHONY: test fuzz build

GOFILES := $(shell git ls-files '*.go' 2>/dev/null || find . -name '*.go')

test:
	@unformatted=$$(gofmt -l $(GOFILES)); if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted"; exit 1; fi
	go vet ./...
	# The Metal backend builds only for macOS; it must build and vet there.
	GOOS=darwin GOARCH=arm64 go vet ./...
	go test ./...
	# The race detector on the packages that run goroutines; -short trims the
	# fixture sweeps that the plain run above covers in full.
	go test -race -short ./accel/... ./engine/... ./daemon/... ./protocol/...
	# adapt's gradient trainer sums its goroutines' gradients.
	go test -race -short -run 'Grad|EditTrainer' ./adapt/
	# The portable kernels, on which the fixture checks must hold as well.
	EDGED_NOASM=1 go test ./quant/ ./accel/... ./engine/
	go vet -tags purego ./quant/ ./accel/...
	bash systemd/check.sh

# Longer fuzzing of the parsers (FUZZTIME per target).
FUZZTIME ?= 2m
fuzz:
	go test ./model -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME)

build:
	go build -o bin/ ./cmd/...
