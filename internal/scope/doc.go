// Package scope owns the scope aggregate: the unit whose state decides
// whether a link works.
//
// # Model
//
// Every link belongs to exactly one scope: a client's sign-in
// ([Signin]), one document share ([Document]) or one appointment
// ([Appointment]). A scope is a subject of the SCOPES stream,
// scope.<practice>.<client>.signin | .doc.<share> | .appt.<appointment>,
// and its state is the last message on that subject: which link is
// current, that link's validity window, and whether it was used, revoked or
// canceled. Older links of the scope are superseded by construction.
// The client id is part of every subject, so a client's scopes can be
// listed ([ClientFilter]); [Parse] reads a subject back. A client's
// revocation record ([Revocation], scope.<practice>.<client>.revocation)
// is a state without a link holding the client's newest revocation and
// its ACTIONS sequence: the issuer revokes every link minted by an older
// action, even one whose scope did not exist when the revocation was
// handled.
//
// A [State] judges a click: [State.Verdict] turns (link, now) into
// "usable" or one of the contract's refusal reasons, and [Explain] says
// that reason in plain words.
//
// The [Store] is the only writer of SCOPES. It is shaped like nats.go's
// KeyValue: [Store.Get] returns the state and its sequence (the
// revision), [Store.Update] writes a new state only if the subject is
// still at the sequence that was read (JetStream's
// Nats-Expected-Last-Subject-Sequence), returning [ErrConflict] otherwise,
// and [Store.Mutate] is the read-decide-write loop built on the two.
// Concurrent changes by any number of replicas are linearized by
// JetStream, not by locks or a leader.
package scope
