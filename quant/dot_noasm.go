//go:build purego || !(amd64 || arm64)

package quant

// archTiers: no assembly in this build.
func archTiers() []tier { return nil }
