// Package link owns the rules of a link: the keyring its token is derived
// with, how the token is derived and named, which scope it belongs to, the
// practice policy that sets its lifetime, the verdict on a click given the
// scope's current state and the time, and the plain-words explanation of a
// refusal.
//
// # Model
//
// A link is minted from the action that creates it: its token is an HMAC of
// the link's purpose and the action's practice and event id under the link
// key ([Keyring.Mint]), its id a one-way hash of the token ([ID]). Nothing
// here stores a token; anyone holding the key re-derives it from the event
// id.
//
// Every link belongs to one scope (a client's sign-in, one document share,
// one appointment). A scope's state is the last message on its JetStream
// subject (see [ScopeOf]); it names the scope's current link and that
// link's window, and records use, revocation and cancellation. [Evaluate]
// turns (link, state, now) into a verdict: usable, or refused with one of the
// reasons of the contract. Because one subject holds the whole truth of a
// scope, a change is a conditional publish on that subject and concurrent
// changes are linearized by JetStream, not by locks.
package link
