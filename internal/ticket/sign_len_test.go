package ticket_test

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/linkpipe/linkpipe/internal/ticket"
)

// FuzzVerify found this: Sign signs claims of any size, but Verify refuses
// a token longer than MaxTokenLen, so large claims (a sub of ~6 KiB today; an
// aud taken from a practice's very long portal_url tomorrow) yield a ticket
// no portal accepts, after the redeemer has burned the link for it. Sign
// should refuse such claims with ErrBadClaims. Skipped until ticket.go is
// fixed (it is being changed in parallel, for aud); see docs/fuzzing.md.
func TestSignedTicketOverMaxTokenLen(t *testing.T) {
	t.Skip("known: Sign does not refuse a ticket longer than MaxTokenLen (docs/fuzzing.md, Findings)")
	s, err := ticket.NewSigner(bytes.Repeat([]byte{5}, 32), "https://links.example")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 3, 4, 10, 0, 0, 0, time.UTC)
	tok, err := s.Sign(ticket.Claims{Subject: strings.Repeat("c", 7000), IssuedAt: now.Unix()})
	if err != nil {
		return // refused: the fix
	}
	if _, err := ticket.Verify(s.JWKS(), tok, now); err != nil {
		t.Fatalf("Sign made a %d-byte ticket that Verify refuses: %v", len(tok), err)
	}
}
