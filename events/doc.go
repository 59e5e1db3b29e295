// Package events is linkpipe's public contract in Go: the actions practice
// systems publish to the ACTIONS stream, the lifecycle events linkpipe
// publishes to the LINKS stream, their subjects, their validation and a
// helper that publishes an action with JetStream de-duplication.
//
// It is the only package of this module that other programs are meant to
// import, and it depends on nothing but the standard library and nats.go.
//
// # Publishing an action
//
// A practice system publishes one JSON message per action. The event id is the
// idempotency key: publishing the same action twice (a retry, a replay) yields
// one link and one email. [Publish] validates an action and publishes it
// with Nats-Msg-Id set to its event id; the runnable example of Publish
// (example_test.go) shows a sign-in request published twice against a real
// nats-server.
//
// # Wire format
//
// Field names are snake_case, ids match [A-Za-z0-9_-]{1,64}, times are RFC
// 3339. Unknown fields are refused, as is a message larger than MaxEventSize.
// An optional "version" field may be sent; only version 1 (or none) is
// accepted, so that a publisher that moves to a newer format learns at once
// that this deployment does not understand it (the message is dead-lettered
// with that reason instead of being half-understood).
//
// Lifecycle events are [LinkEvent] values on subjects links.<link_id>.<type>.
//
// # The contract for other languages
//
// schema/ holds a JSON Schema (2020-12) for every action subject
// (schema/<subject>.json) and every lifecycle type (schema/links.<type>.json),
// and asyncapi.yaml an AsyncAPI 3.0 document of the subjects. schema_test.go
// keeps them true: each Subject* and Type* constant has its schema, golden
// file and channel; each schema describes exactly the json fields of its Go
// type, recursively, and refuses unknown ones; what Decode accepts the schema
// accepts. Decode stays the authority for what a schema cannot say (a time
// zone that exists, ends_at after starts_at, policy bounds, lengths in bytes).
package events
