package ticket_test

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/linkpipe/linkpipe/internal/ticket"
)

var (
	seedA = bytes.Repeat([]byte{1}, 32)
	seedB = bytes.Repeat([]byte{2}, 32)
	now   = time.Date(2026, 3, 4, 10, 0, 0, 0, time.UTC)
)

func signer(t *testing.T, seed []byte) *ticket.Signer {
	t.Helper()
	s, err := ticket.NewSigner(seed, "https://links.example")
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// want is what a portal at https://portal.example expects of its tickets.
var want = ticket.Want{Issuer: "https://links.example", Audience: "https://portal.example"}

func claims() ticket.Claims {
	return ticket.Claims{Audience: "https://portal.example", Subject: "c-7", Practice: "acme", Purpose: "signin", Link: "Labc", IssuedAt: now.Unix()}
}

func TestSignVerifyRoundTrip(t *testing.T) {
	s := signer(t, seedA)
	tok, err := s.Sign(claims())
	if err != nil {
		t.Fatal(err)
	}
	c, err := ticket.Verify(s.JWKS(), tok, want, now.Add(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if c.Issuer != "https://links.example" || c.Audience != "https://portal.example" || c.Subject != "c-7" || c.Practice != "acme" || c.Purpose != "signin" ||
		c.Link != "Labc" || c.IssuedAt != now.Unix() || c.ExpiresAt != now.Unix()+120 || c.Idle != 900 || len(c.ID) < 16 {
		t.Fatalf("claims %+v", c)
	}
	tok2, _ := s.Sign(claims())
	c2, _ := ticket.Verify(s.JWKS(), tok2, want, now)
	if c2.ID == c.ID {
		t.Fatal("jti repeats")
	}

	// Header is exactly the contract's.
	var h map[string]string
	hb, _ := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[0])
	if err := json.Unmarshal(hb, &h); err != nil || h["alg"] != "EdDSA" || h["typ"] != "JWT" || h["kid"] != s.Kid() {
		t.Fatalf("header %s %v", hb, err)
	}
	// JWKS carries the key under that kid.
	var set struct {
		Keys []map[string]string `json:"keys"`
	}
	if err := json.Unmarshal(s.JWKS(), &set); err != nil || len(set.Keys) != 1 {
		t.Fatalf("jwks %s %v", s.JWKS(), err)
	}
	k := set.Keys[0]
	x, _ := base64.RawURLEncoding.DecodeString(k["x"])
	if k["kty"] != "OKP" || k["crv"] != "Ed25519" || k["alg"] != "EdDSA" || k["use"] != "sig" || k["kid"] != s.Kid() ||
		!bytes.Equal(x, s.PublicKey()) || ticket.KeyID(ed25519.PublicKey(x)) != s.Kid() {
		t.Fatalf("jwk %v", k)
	}
	if signer(t, seedA).Kid() != s.Kid() || signer(t, seedB).Kid() == s.Kid() {
		t.Fatal("kid is not a function of the key")
	}
}

func TestVerifyRefuses(t *testing.T) {
	s := signer(t, seedA)
	other := signer(t, seedB)
	tok, err := s.Sign(claims())
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(tok, ".")
	flip := func(seg string) string {
		b, _ := base64.RawURLEncoding.DecodeString(seg)
		b[len(b)/2] ^= 1
		return base64.RawURLEncoding.EncodeToString(b)
	}
	forgedClaims := claims()
	forgedClaims.Subject = "someone-else"
	fp, _ := json.Marshal(forgedClaims)
	otherTok, _ := other.Sign(claims())
	// Validly signed, but not for this portal or not by this issuer.
	sign := func(c ticket.Claims) string {
		h := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"EdDSA","typ":"JWT","kid":"` + s.Kid() + `"}`))
		c.ExpiresAt, c.ID, c.Idle = c.IssuedAt+60, "j1", 900
		if c.Issuer == "" {
			c.Issuer = "https://links.example"
		}
		p, _ := json.Marshal(c)
		in := h + "." + base64.RawURLEncoding.EncodeToString(p)
		return in + "." + base64.RawURLEncoding.EncodeToString(ed25519.Sign(ed25519.NewKeyFromSeed(seedA), []byte(in)))
	}
	audC := claims()
	audC.Audience = "https://evil.example"
	audTok := sign(audC)
	noAudC := claims()
	noAudC.Audience = ""
	noAudTok := sign(noAudC)
	issC := claims()
	issC.Issuer = "https://other-links.example"
	issTok := sign(issC)
	if _, err := ticket.Verify(s.JWKS(), sign(claims()), want, now); err != nil {
		t.Fatalf("hand-signed control token: %v", err)
	}
	noneHdr := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","kid":"` + s.Kid() + `"}`))
	hsHdr := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT","kid":"` + s.Kid() + `"}`))
	wrongKidHdr := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"EdDSA","typ":"JWT","kid":"` + other.Kid() + `"}`))

	cases := []struct {
		name  string
		tok   string
		at    time.Time
		jwks  []byte
		want  error
		extra string
	}{
		{"tampered payload", parts[0] + "." + flip(parts[1]) + "." + parts[2], now, nil, ticket.ErrSignature, ""},
		{"substituted payload", parts[0] + "." + base64.RawURLEncoding.EncodeToString(fp) + "." + parts[2], now, nil, ticket.ErrSignature, ""},
		{"tampered signature", parts[0] + "." + parts[1] + "." + flip(parts[2]), now, nil, ticket.ErrSignature, ""},
		{"wrong kid", wrongKidHdr + "." + parts[1] + "." + parts[2], now, nil, ticket.ErrUnknownKey, ""},
		{"signed by another key", otherTok, now, nil, ticket.ErrUnknownKey, ""},
		{"other key, its kid, our jwks lacks it", otherTok, now, s.JWKS(), ticket.ErrUnknownKey, ""},
		{"alg none", noneHdr + "." + parts[1] + ".", now, nil, ticket.ErrAlg, ""},
		{"alg HS256", hsHdr + "." + parts[1] + "." + parts[2], now, nil, ticket.ErrAlg, ""},
		{"expired", tok, now.Add(120 * time.Second), nil, ticket.ErrExpired, ""},
		{"long expired", tok, now.Add(time.Hour), nil, ticket.ErrExpired, ""},
		{"issued in the future", tok, now.Add(-time.Minute), nil, ticket.ErrNotYetValid, ""},
		{"two parts", parts[0] + "." + parts[1], now, nil, ticket.ErrMalformed, ""},
		{"garbage", "not a token", now, nil, ticket.ErrMalformed, ""},
		{"padding", tok + "=", now, nil, ticket.ErrMalformed, ""},
		{"oversized", strings.Repeat("a", ticket.MaxTokenLen+1), now, nil, ticket.ErrMalformed, ""},
		{"bad jwks", tok, now, []byte("{"), ticket.ErrBadJWKS, ""},
		{"for another portal", audTok, now, nil, ticket.ErrAudience, ""},
		{"without aud", noAudTok, now, nil, ticket.ErrAudience, ""},
		{"from another issuer", issTok, now, nil, ticket.ErrIssuer, ""},
	}
	for _, tc := range cases {
		jwks := tc.jwks
		if jwks == nil {
			jwks = s.JWKS()
		}
		c, err := ticket.Verify(jwks, tc.tok, want, tc.at)
		if !errors.Is(err, tc.want) || c != nil {
			t.Errorf("%s: got %v (%+v), want %v", tc.name, err, c, tc.want)
		}
	}
	// The other signer's token verifies against its own key set.
	if _, err := ticket.Verify(other.JWKS(), otherTok, want, now); err != nil {
		t.Fatal(err)
	}
}

// TestSeveralKeysFirstSigns: with several seeds the first signs, every key
// is in the JWKS, so a ticket signed before a rotation still verifies.
func TestSeveralKeysFirstSigns(t *testing.T) {
	old := signer(t, seedA)
	oldTok, err := old.Sign(claims())
	if err != nil {
		t.Fatal(err)
	}
	rotated, err := ticket.NewRotatingSigner([][]byte{seedB, seedA}, "https://links.example")
	if err != nil {
		t.Fatal(err)
	}
	if rotated.Kid() != signer(t, seedB).Kid() {
		t.Fatal("the first seed does not sign")
	}
	var set ticket.JWKS
	if err := json.Unmarshal(rotated.JWKS(), &set); err != nil || len(set.Keys) != 2 ||
		set.Keys[0].Kid != signer(t, seedB).Kid() || set.Keys[1].Kid != old.Kid() {
		t.Fatalf("jwks %s", rotated.JWKS())
	}
	newTok, _ := rotated.Sign(claims())
	for _, tok := range []string{oldTok, newTok} {
		if _, err := ticket.Verify(rotated.JWKS(), tok, want, now); err != nil {
			t.Fatalf("rotated JWKS refuses a ticket: %v", err)
		}
	}
	if _, err := ticket.NewRotatingSigner(nil, "x"); !errors.Is(err, ticket.ErrBadSeed) {
		t.Fatalf("no seeds: %v", err)
	}
	// A portal that expects nothing is refused rather than fooled.
	if _, err := ticket.Verify(rotated.JWKS(), newTok, ticket.Want{}, now); err == nil {
		t.Fatal("Verify with no expected issuer and audience passed")
	}
}

func TestSignRefusesBadClaims(t *testing.T) {
	s := signer(t, seedA)
	long := claims()
	long.ExpiresAt = long.IssuedAt + 121
	noIat := claims()
	noIat.IssuedAt = 0
	noSub := claims()
	noSub.Subject = ""
	backwards := claims()
	backwards.ExpiresAt = backwards.IssuedAt - 1
	for name, c := range map[string]ticket.Claims{"lifetime over 120s": long, "no iat": noIat, "no sub": noSub, "exp before iat": backwards} {
		if _, err := s.Sign(c); !errors.Is(err, ticket.ErrBadClaims) {
			t.Errorf("%s: %v", name, err)
		}
	}
	short := claims()
	short.ExpiresAt = short.IssuedAt + 30
	short.Idle = 60
	tok, err := s.Sign(short)
	if err != nil {
		t.Fatal(err)
	}
	c, err := ticket.Verify(s.JWKS(), tok, want, now)
	if err != nil || c.ExpiresAt != now.Unix()+30 || c.Idle != 60 {
		t.Fatalf("%+v %v", c, err)
	}
	if _, err := ticket.NewSigner([]byte("short"), "x"); !errors.Is(err, ticket.ErrBadSeed) {
		t.Fatal(err)
	}
}

func BenchmarkSign(b *testing.B) {
	s, _ := ticket.NewSigner(seedA, "https://links.example")
	c := claims()
	for b.Loop() {
		if _, err := s.Sign(c); err != nil {
			b.Fatal(err)
		}
	}
}

// TestSignRefusesTicketsVerifyWouldRefuse: found by FuzzVerify. Claims
// large enough to make a ticket over MaxTokenLen were signed, and Verify
// then refused the ticket: the click burned its link for nothing.
func TestSignRefusesTicketsVerifyWouldRefuse(t *testing.T) {
	s, err := ticket.NewSigner(make([]byte, 32), "https://links.example")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_800_000_000, 0)
	_, err = s.Sign(ticket.Claims{Subject: strings.Repeat("x", ticket.MaxTokenLen), Audience: "https://portal.example",
		IssuedAt: now.Unix(), ExpiresAt: now.Add(time.Minute).Unix()})
	if !errors.Is(err, ticket.ErrBadClaims) {
		t.Fatalf("an oversized ticket was signed: %v", err)
	}
}
