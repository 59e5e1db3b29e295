// Package link owns what a link is made of: how its token is derived from
// the action that creates it and how the token is named (its link id), the
// keyring that holds the link keys (with key ids for rotation), and the
// practice policy that sets a link's lifetime. Which scope a link belongs
// to, the scope's state and the verdict on a click are package scope's.
//
// # Model
//
// A link is minted from the action that creates it: its token is
// kid.HMAC(link key, purpose|practice|event id), its id a one-way hash of
// the token. Nothing here stores a token; anyone holding the key re-derives
// it from the event id ([Keyring.Mint]), so the mailer can email a link
// whose token was never written down.
package link
