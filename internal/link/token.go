package link

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"github.com/linkpipe/linkpipe/events"
)

// Errors of token handling.
var (
	// ErrBadKey: LINKPIPE_LINK_KEY is not "[kid:]base64 of 32 bytes[,...]".
	ErrBadKey = errors.New("link key must be [kid:]base64 of 32 bytes, comma-separated for rotation")
	// ErrUnknownKid: a token or mail command names a key id the keyring lacks.
	ErrUnknownKid = errors.New("unknown link key id")
	// ErrMalformedToken: the string cannot be a linkpipe token.
	ErrMalformedToken = errors.New("malformed link token")
)

// DefaultKid is the key id of a key given without a "kid:" prefix.
const DefaultKid = "k1"

// validKid reports whether kid may name a key: [A-Za-z0-9_-]{1,16}.
func validKid(kid string) bool { return len(kid) <= 16 && events.ValidID(kid) }

// macLen is the length of the base64url (unpadded) HMAC-SHA256 in a token.
const macLen = 43

// MaxTokenLen is the longest well-formed token.
const MaxTokenLen = 16 + 1 + macLen

// Keyring holds the secrets tokens are derived from. The first key mints new
// tokens; the others let the mailer re-derive tokens minted before a
// rotation.
type Keyring struct {
	current string
	keys    map[string][]byte
}

// ParseKeyring parses LINKPIPE_LINK_KEY: "kid:BASE64" or "BASE64" (kid
// "k1"), several separated by commas, newest first.
func ParseKeyring(s string) (*Keyring, error) {
	kr := &Keyring{keys: map[string][]byte{}}
	for i, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		kid, b64 := DefaultKid, part
		if k, v, ok := strings.Cut(part, ":"); ok {
			kid, b64 = k, v
		}
		if !validKid(kid) {
			return nil, fmt.Errorf("%w: bad key id %q", ErrBadKey, kid)
		}
		key, err := base64.StdEncoding.DecodeString(b64)
		if err != nil {
			key, err = base64.RawURLEncoding.DecodeString(b64)
		}
		if err != nil || len(key) != 32 {
			return nil, ErrBadKey
		}
		if _, dup := kr.keys[kid]; dup {
			return nil, fmt.Errorf("%w: key id %q twice", ErrBadKey, kid)
		}
		kr.keys[kid] = key
		if i == 0 {
			kr.current = kid
		}
	}
	return kr, nil
}

// NewKeyring returns a keyring of one key, for tests and dev mode.
func NewKeyring(kid string, key []byte) *Keyring {
	return &Keyring{current: kid, keys: map[string][]byte{kid: append([]byte(nil), key...)}}
}

// CurrentKid is the id of the key that mints new tokens.
func (k *Keyring) CurrentKid() string { return k.current }

// Mint derives the token of a link from the action that creates it and
// what the link is bound to: its purpose and its scope subject
// (scope.<practice>.<client>.<kind>[.<id>], which names the practice, the
// client and the share or appointment). The same (kid, purpose, scope,
// event id) always yields the same token, which is what makes minting
// idempotent without ever storing the token; an event id reused for
// another client or scope yields another token, so a link minted for one
// client can never become another client's.
func (k *Keyring) Mint(kid, purpose, scope, eventID string) (string, error) {
	key, ok := k.keys[kid]
	if !ok {
		return "", fmt.Errorf("%w: %q", ErrUnknownKid, kid)
	}
	m := hmac.New(sha256.New, key)
	m.Write([]byte("linkpipe/link/v2\x00" + purpose + "\x00" + scope + "\x00" + eventID))
	return kid + "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil)), nil
}

// ID returns the link id of a token: a one-way hash of it, so the ledger and
// every event name the link without revealing the bearer token. It returns
// ErrMalformedToken for anything that cannot be a token (truncated,
// oversized, wrong alphabet).
func ID(token string) (string, error) {
	if len(token) > MaxTokenLen {
		return "", ErrMalformedToken
	}
	kid, mac, ok := strings.Cut(token, ".")
	if !ok || !validKid(kid) || len(mac) != macLen {
		return "", ErrMalformedToken
	}
	// The decoder skips CR and LF even in strict mode, so the length of
	// what it decodes is what proves all 43 characters are base64url.
	if b, err := base64.RawURLEncoding.Strict().DecodeString(mac); err != nil || len(b) != sha256.Size {
		return "", ErrMalformedToken
	}
	sum := sha256.Sum256([]byte(token))
	return "L" + base64.RawURLEncoding.EncodeToString(sum[:18]), nil
}
