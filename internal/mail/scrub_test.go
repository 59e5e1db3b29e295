package mail_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/linkpipe/linkpipe/internal/mail"
)

func TestScrubRemovesAddressesAndTokens(t *testing.T) {
	token := "k1." + strings.Repeat("aB3_-", 8) + "xyz"
	for in, want := range map[string]string{
		"MessageRejected: Email address is not verified. The following identities failed the check in region US-EAST-1: pat@example.com": "MessageRejected: Email address is not verified. The following identities failed the check in region US-EAST-1: [address]",
		"to <Pat.O'Neil+x@sub.example.co.uk>, bob@localhost":                                                                             "to <[address]>, [address]",
		"rcpt=pat%40example.com refused":                     "[address] refused",
		"ünï@exämple.com bounced":                            "[address] bounced",
		"link https://links.example/l/" + token + " in body": "link https://links.example/l/[token] in body",
		"StatusCode: 400, RequestID: 7f3c, MessageRejected":  "StatusCode: 400, RequestID: 7f3c, MessageRejected",
	} {
		if got := mail.Scrub(in); got != want {
			t.Errorf("Scrub(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestScrubErrorKeepsTheChain(t *testing.T) {
	err := mail.ScrubError(fmt.Errorf("%w: refused pat@example.com", mail.ErrPermanent))
	if !mail.IsPermanent(err) || !errors.Is(err, mail.ErrPermanent) {
		t.Fatalf("%v lost its sentinel", err)
	}
	if strings.Contains(err.Error(), "pat@example.com") || !strings.Contains(err.Error(), mail.ScrubbedAddress) {
		t.Fatalf("text %q", err.Error())
	}
	if mail.ScrubError(nil) != nil {
		t.Fatal("ScrubError(nil) is not nil")
	}
}
