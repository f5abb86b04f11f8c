// Package protocol holds the wire types that edged, edgectl and other
// clients exchange, over the Unix-socket HTTP API and over NATS alike: one
// schema serves every transport.
//
// The request and response bodies follow the OpenAI API (completions, chat
// completions, models) with a few edged extensions (tokenize, status, model
// load and unload). Every request may carry "version"; absent or 0 means
// Version, and any other value is rejected, so that a later incompatible
// schema is refused rather than misread. Responses carry "version" too.
//
// Decoding is strict: the body must be one JSON value of at most
// MaxBodyBytes of valid UTF-8, unknown fields are rejected by name, and
// Validate checks sizes and ranges (see limits.go). Every error a client can
// see is an *Error whose Code comes from the single table in errors.go.
package protocol

// Version is the schema version of every type in this package.
const Version = 1
