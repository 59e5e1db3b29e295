package ticket_test

import (
	"bytes"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/linkpipe/linkpipe/internal/ticket"
)

var (
	fuzzSeed = bytes.Repeat([]byte{5}, 32)
	fuzzNow  = time.Date(2026, 3, 4, 10, 0, 0, 0, time.UTC)
)

// maxFuzzSub bounds the fuzzed sub claim: even if every byte is JSON-escaped
// (\u00XX, six bytes) the ticket stays far below MaxTokenLen, which a
// larger one exceeds (Sign then refuses it: TestSignRefusesTicketsVerifyWouldRefuse).
const maxFuzzSub = 256

// fuzzClaims are the claims of the one fixed ticket of the corpus (a fixed
// jti makes its compact JWS deterministic: Ed25519 signatures are).
func fuzzClaims() ticket.Claims {
	return ticket.Claims{Subject: "c-7", Practice: "acme", Purpose: "signin", Link: "Labc",
		Audience: fuzzAud, IssuedAt: fuzzNow.Unix(), ID: "fixed-jti-0001"}
}

// The issuer and audience the fuzzed verifier wants.
const (
	fuzzIss = "https://links.example"
	fuzzAud = "https://portal.example"
)

var fuzzWant = ticket.Want{Issuer: fuzzIss, Audience: fuzzAud}

// verifyErrs are the sentinels every Verify error wraps.
var verifyErrs = []error{ticket.ErrMalformed, ticket.ErrBadJWKS, ticket.ErrAlg, ticket.ErrUnknownKey,
	ticket.ErrSignature, ticket.ErrExpired, ticket.ErrNotYetValid, ticket.ErrIssuer, ticket.ErrAudience}

func checkVerifyErr(t *testing.T, tok string, err error) {
	t.Helper()
	for _, s := range verifyErrs {
		if errors.Is(err, s) {
			return
		}
	}
	t.Fatalf("Verify(%q): undocumented error %v", tok, err)
}

// FuzzVerify fuzzes ticket verification. Properties:
//   - Verify never panics, and refuses with one of its documented errors;
//   - it accepts no string the signer did not produce: the only ticket it
//     may accept among fuzzed strings is the corpus's one signed ticket;
//   - a ticket signed for a fuzzed subject verifies to that subject, and
//     any change of one byte of it is refused.
func FuzzVerify(f *testing.F) {
	s, err := ticket.NewSigner(fuzzSeed, fuzzIss)
	if err != nil {
		f.Fatal(err)
	}
	jwks := s.JWKS()
	good, err := s.Sign(fuzzClaims())
	if err != nil {
		f.Fatal(err)
	}
	parts := strings.Split(good, ".")
	enc := base64.RawURLEncoding.EncodeToString
	f.Add(good, "c-7", uint(0), byte('x'))
	f.Add(good, "c-8", uint(len(good)-1), byte('A'))
	f.Add(good[:len(good)-1], "", uint(10), byte('.'))
	f.Add(good+".", "\r\n", uint(200), byte(0))
	f.Add(enc([]byte(`{"alg":"none","kid":"`+s.Kid()+`"}`))+"."+parts[1]+".", "c", uint(1), byte('a'))
	f.Add(enc([]byte(`{"alg":"HS256","kid":"`+s.Kid()+`"}`))+"."+parts[1]+"."+parts[2], "c", uint(2), byte('b'))
	f.Add(parts[0]+"."+enc([]byte(`{"sub":"someone-else","iat":1772618400,"exp":1772618520}`))+"."+parts[2], "c", uint(3), byte('c'))
	f.Add(strings.Repeat("A", ticket.MaxTokenLen+1), "c", uint(4), byte('d'))

	f.Fuzz(func(t *testing.T, tok, sub string, pos uint, b byte) {
		if c, err := ticket.Verify(jwks, tok, fuzzWant, fuzzNow); err == nil {
			if tok != good {
				t.Fatalf("Verify accepted %q, which the signer never produced (claims %+v)", tok, c)
			}
		} else {
			checkVerifyErr(t, tok, err)
		}

		if sub == "" {
			sub = "c"
		}
		// Sign refuses a ticket over MaxTokenLen (which Verify would
		// refuse); real claims are ids of at most 64 bytes.
		if len(sub) > maxFuzzSub {
			sub = sub[:maxFuzzSub]
		}
		signed, err := s.Sign(ticket.Claims{Subject: sub, Practice: "acme", Purpose: "signin", Link: "Labc", Audience: fuzzAud, IssuedAt: fuzzNow.Unix()})
		if err != nil {
			t.Fatalf("Sign(sub %q): %v", sub, err)
		}
		c, err := ticket.Verify(jwks, signed, fuzzWant, fuzzNow)
		if err != nil {
			t.Fatalf("a freshly signed ticket is refused: %v", err)
		}
		if utf8.ValidString(sub) && c.Subject != sub {
			t.Fatalf("sub %q verified as %q", sub, c.Subject)
		}
		i := int(pos % uint(len(signed)))
		if signed[i] == b {
			b++
		}
		mutated := signed[:i] + string([]byte{b}) + signed[i+1:]
		if _, err := ticket.Verify(jwks, mutated, fuzzWant, fuzzNow); err == nil {
			t.Fatalf("byte %d of a signed ticket changed to %q, and Verify accepts it: %q", i, b, mutated)
		} else {
			checkVerifyErr(t, mutated, err)
		}
	})
}
