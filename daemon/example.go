package daemon

import _ "embed"

// ExampleConfig is the commented example configuration: every key with
// its default (`edged --example-config`).
//
//go:embed edged.example.toml
var ExampleConfig string
