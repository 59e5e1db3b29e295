// Package ticket owns the portal ticket: the short-lived signed statement a
// redemption hands to the practice's portal ("this client just proved they
// hold this link"). A ticket is a compact JWS signed with Ed25519 (alg
// EdDSA); its kid is derived from the public key, and the public key is
// published as a JWKS at /.well-known/jwks.json so portals verify tickets
// without sharing a secret. [Verify] is what a portal (or a test, or the
// demo portal) runs.
package ticket

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Limits and defaults of a ticket.
const (
	// MaxLifetime is the longest a ticket lives (exp - iat).
	MaxLifetime = 120 * time.Second
	// DefaultIdle is the portal session's idle timeout, in seconds, that a
	// ticket carries when its claims set none.
	DefaultIdle = 900
	// MaxTokenLen is the longest token Verify looks at.
	MaxTokenLen = 8 << 10
	// Leeway is the clock skew Verify tolerates on iat.
	Leeway = 30 * time.Second
	// Alg is the only algorithm of a ticket.
	Alg = "EdDSA"
)

// Errors of Sign and Verify. Verify's errors wrap one of these.
var (
	// ErrBadSeed: the signing seed is not 32 bytes.
	ErrBadSeed = errors.New("ticket: Ed25519 seed must be 32 bytes")
	// ErrBadClaims: Sign was given claims it cannot sign (no iat, no sub,
	// a lifetime over MaxLifetime).
	ErrBadClaims = errors.New("ticket: bad claims")
	// ErrMalformed: the token is not a compact JWS of the expected shape.
	ErrMalformed = errors.New("ticket: malformed token")
	// ErrBadJWKS: the key set cannot be parsed.
	ErrBadJWKS = errors.New("ticket: bad JWKS")
	// ErrAlg: the header names an algorithm other than EdDSA.
	ErrAlg = errors.New("ticket: unsupported alg")
	// ErrUnknownKey: no key of the JWKS has the token's kid.
	ErrUnknownKey = errors.New("ticket: unknown kid")
	// ErrSignature: the signature does not verify.
	ErrSignature = errors.New("ticket: bad signature")
	// ErrExpired: now is at or after exp.
	ErrExpired = errors.New("ticket: expired")
	// ErrNotYetValid: iat is in the future (beyond Leeway).
	ErrNotYetValid = errors.New("ticket: issued in the future")
	ErrIssuer      = errors.New("ticket: wrong iss")
	ErrAudience    = errors.New("ticket: wrong aud")
)

// Claims are a ticket's claims. Times are Unix seconds.
type Claims struct {
	// Issuer is the redeemer's public URL.
	Issuer string `json:"iss"`
	// Audience is the origin of the portal the ticket is for
	// (scheme://host[:port] of the practice's portal_url).
	Audience string `json:"aud,omitempty"`
	// Subject is the client id.
	Subject  string `json:"sub"`
	Practice string `json:"practice"`
	// Purpose is signin, document or telehealth.
	Purpose string `json:"purpose"`
	// Link is the link id that was redeemed.
	Link      string `json:"link"`
	IssuedAt  int64  `json:"iat"`
	ExpiresAt int64  `json:"exp"`
	// ID is unique per ticket, so a portal can refuse a replay.
	ID string `json:"jti"`
	// Idle is the portal session's idle timeout in seconds.
	Idle int `json:"idle"`
}

type header struct {
	Alg string `json:"alg"`
	Typ string `json:"typ,omitempty"`
	Kid string `json:"kid"`
}

// Want is what a portal expects of a ticket: the redeemer's public URL and
// the portal's own origin.
type Want struct {
	Issuer   string
	Audience string
}

// Signer signs tickets with one Ed25519 key and publishes that key and
// any older ones (a rotation) in its JWKS.
type Signer struct {
	priv   ed25519.PrivateKey
	pub    ed25519.PublicKey
	kid    string
	issuer string
	hdr    string // encoded header
	jwks   []byte
}

// NewSigner returns a signer for a 32-byte Ed25519 seed; issuer fills the
// iss claim of tickets that set none.
func NewSigner(seed []byte, issuer string) (*Signer, error) {
	return NewRotatingSigner([][]byte{seed}, issuer)
}

// NewRotatingSigner returns a signer whose first seed signs and whose JWKS
// holds the keys of every seed, in order, so that tickets signed with an
// older key verify until it is dropped (LINKPIPE_TICKET_KEY lists several
// seeds, comma-separated, newest first).
func NewRotatingSigner(seeds [][]byte, issuer string) (*Signer, error) {
	if len(seeds) == 0 {
		return nil, fmt.Errorf("%w: no seed", ErrBadSeed)
	}
	var set JWKS
	for _, seed := range seeds {
		if len(seed) != ed25519.SeedSize {
			return nil, ErrBadSeed
		}
		pub := ed25519.NewKeyFromSeed(seed).Public().(ed25519.PublicKey)
		set.Keys = append(set.Keys, JWK{Kty: "OKP", Crv: "Ed25519", X: b64(pub), Kid: KeyID(pub), Alg: Alg, Use: "sig"})
	}
	priv := ed25519.NewKeyFromSeed(seeds[0])
	pub := priv.Public().(ed25519.PublicKey)
	s := &Signer{priv: priv, pub: pub, kid: KeyID(pub), issuer: issuer}
	h, err := json.Marshal(header{Alg: Alg, Typ: "JWT", Kid: s.kid})
	if err != nil {
		return nil, fmt.Errorf("ticket: header: %w", err)
	}
	s.hdr = b64(h)
	if s.jwks, err = json.Marshal(set); err != nil {
		return nil, fmt.Errorf("ticket: jwks: %w", err)
	}
	return s, nil
}

// KeyID derives a key's kid: base64url of the first 12 bytes of
// SHA-256(public key).
func KeyID(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return b64(sum[:12])
}

// Kid is the signing key's id.
func (s *Signer) Kid() string { return s.kid }

// Issuer is the iss claim the signer fills in.
func (s *Signer) Issuer() string { return s.issuer }

// PublicKey is the signing key's public key.
func (s *Signer) PublicKey() ed25519.PublicKey { return s.pub }

// JWKS returns the key set portals verify tickets with, the signing key
// first: {"keys":[{"kty":"OKP","crv":"Ed25519","x":…,"kid":…,"alg":"EdDSA","use":"sig"},…]}.
// The caller must not modify it.
func (s *Signer) JWKS() []byte { return s.jwks }

// Sign returns the compact JWS of c. IssuedAt is required (the caller's
// clock); an empty Issuer becomes the signer's, an empty ID a random one, a
// zero ExpiresAt IssuedAt+MaxLifetime and a zero Idle DefaultIdle.
func (s *Signer) Sign(c Claims) (string, error) {
	if c.IssuedAt <= 0 {
		return "", fmt.Errorf("%w: iat is required", ErrBadClaims)
	}
	if c.Subject == "" {
		return "", fmt.Errorf("%w: sub is required", ErrBadClaims)
	}
	if c.Audience == "" {
		return "", fmt.Errorf("%w: aud is required", ErrBadClaims)
	}
	if c.Issuer == "" {
		c.Issuer = s.issuer
	}
	if c.ExpiresAt == 0 {
		c.ExpiresAt = c.IssuedAt + int64(MaxLifetime/time.Second)
	}
	if c.ExpiresAt <= c.IssuedAt || c.ExpiresAt-c.IssuedAt > int64(MaxLifetime/time.Second) {
		return "", fmt.Errorf("%w: exp must be after iat and at most %s later", ErrBadClaims, MaxLifetime)
	}
	if c.Idle == 0 {
		c.Idle = DefaultIdle
	}
	if c.ID == "" {
		var b [16]byte
		if _, err := rand.Read(b[:]); err != nil {
			return "", fmt.Errorf("ticket: jti: %w", err)
		}
		c.ID = b64(b[:])
	}
	payload, err := json.Marshal(c)
	if err != nil {
		return "", fmt.Errorf("ticket: claims: %w", err)
	}
	signing := s.hdr + "." + b64(payload)
	sig := ed25519.Sign(s.priv, []byte(signing))
	token := signing + "." + b64(sig)
	if len(token) > MaxTokenLen {
		// Verify would refuse it: a redemption must not burn its link for
		// a ticket the portal cannot accept.
		return "", fmt.Errorf("%w: the ticket would be %d bytes, over %d", ErrBadClaims, len(token), MaxTokenLen)
	}
	return token, nil
}

// JWK is one key of a JWKS (only OKP/Ed25519 keys are used).
type JWK struct {
	Kty string `json:"kty"`
	Crv string `json:"crv"`
	X   string `json:"x"`
	Kid string `json:"kid"`
	Alg string `json:"alg,omitempty"`
	Use string `json:"use,omitempty"`
}

// JWKS is a JSON Web Key Set.
type JWKS struct {
	Keys []JWK `json:"keys"`
}

// Verify checks a ticket against a JWKS at now: the header's alg (EdDSA
// only) and kid (must name an Ed25519 key of the set), the signature, iss
// and aud (must be want's; both must be given), exp (now must be before
// it), iat (not in the future beyond Leeway) and the lifetime (at most
// MaxLifetime). It returns the claims; refusing a replayed jti (single
// use) and checking purpose are the portal's business.
func Verify(jwks []byte, token string, want Want, now time.Time) (*Claims, error) {
	if len(token) > MaxTokenLen {
		return nil, fmt.Errorf("%w: longer than %d bytes", ErrMalformed, MaxTokenLen)
	}
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return nil, fmt.Errorf("%w: want 3 parts, got %d", ErrMalformed, len(parts))
	}
	hb, err := unb64(parts[0])
	if err != nil {
		return nil, fmt.Errorf("%w: header: %v", ErrMalformed, err)
	}
	var h header
	if err := strictJSON(hb, &h); err != nil {
		return nil, fmt.Errorf("%w: header: %v", ErrMalformed, err)
	}
	if h.Alg != Alg {
		return nil, fmt.Errorf("%w: %q", ErrAlg, h.Alg)
	}
	pub, err := findKey(jwks, h.Kid)
	if err != nil {
		return nil, err
	}
	sig, err := unb64(parts[2])
	if err != nil || len(sig) != ed25519.SignatureSize {
		return nil, fmt.Errorf("%w: signature encoding", ErrMalformed)
	}
	if !ed25519.Verify(pub, []byte(parts[0]+"."+parts[1]), sig) {
		return nil, ErrSignature
	}
	pb, err := unb64(parts[1])
	if err != nil {
		return nil, fmt.Errorf("%w: payload: %v", ErrMalformed, err)
	}
	var c Claims
	if err := strictJSON(pb, &c); err != nil {
		return nil, fmt.Errorf("%w: payload: %v", ErrMalformed, err)
	}
	if want.Issuer == "" || c.Issuer != want.Issuer {
		return nil, fmt.Errorf("%w: %q, want %q", ErrIssuer, c.Issuer, want.Issuer)
	}
	if want.Audience == "" || c.Audience != want.Audience {
		return nil, fmt.Errorf("%w: %q, want %q", ErrAudience, c.Audience, want.Audience)
	}
	if c.IssuedAt <= 0 || c.ExpiresAt <= c.IssuedAt || c.ExpiresAt-c.IssuedAt > int64(MaxLifetime/time.Second) {
		return nil, fmt.Errorf("%w: iat %d, exp %d", ErrMalformed, c.IssuedAt, c.ExpiresAt)
	}
	if now.Unix() >= c.ExpiresAt {
		return nil, fmt.Errorf("%w: at %s", ErrExpired, time.Unix(c.ExpiresAt, 0).UTC().Format(time.RFC3339))
	}
	if time.Unix(c.IssuedAt, 0).After(now.Add(Leeway)) {
		return nil, fmt.Errorf("%w: iat %s", ErrNotYetValid, time.Unix(c.IssuedAt, 0).UTC().Format(time.RFC3339))
	}
	return &c, nil
}

func findKey(jwks []byte, kid string) (ed25519.PublicKey, error) {
	var set JWKS
	if err := json.Unmarshal(jwks, &set); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadJWKS, err)
	}
	if kid == "" {
		return nil, fmt.Errorf("%w: token has no kid", ErrUnknownKey)
	}
	for _, k := range set.Keys {
		if k.Kid != kid {
			continue
		}
		if k.Kty != "OKP" || k.Crv != "Ed25519" || (k.Alg != "" && k.Alg != Alg) {
			return nil, fmt.Errorf("%w: key %q is %s/%s/%s", ErrAlg, kid, k.Kty, k.Crv, k.Alg)
		}
		x, err := unb64(k.X)
		if err != nil || len(x) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("%w: key %q: bad x", ErrBadJWKS, kid)
		}
		return ed25519.PublicKey(x), nil
	}
	return nil, fmt.Errorf("%w: %q", ErrUnknownKey, kid)
}

// strictJSON decodes one JSON object (json.Unmarshal refuses trailing data).
func strictJSON(b []byte, v any) error {
	if len(b) == 0 || b[0] != '{' {
		return errors.New("not a JSON object")
	}
	return json.Unmarshal(b, v)
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func unb64(s string) ([]byte, error) { return base64.RawURLEncoding.Strict().DecodeString(s) }
