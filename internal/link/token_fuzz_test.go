package link_test

import (
	"regexp"
	"strings"
	"testing"

	"github.com/linkpipe/linkpipe/events"
	"github.com/linkpipe/linkpipe/internal/link"
)

const b64url = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

// tokenForm is the documented token shape: kid "." base64url(HMAC-SHA256).
var tokenForm = regexp.MustCompile(`^[A-Za-z0-9_-]{1,16}\.[A-Za-z0-9_-]{43}$`)

// wellFormed is an oracle for ID, written from the token's definition, not
// from ID's code: the documented form, and a MAC that is the canonical
// encoding of 32 bytes (43 characters carry 258 bits, so the last one's two
// low bits are zero).
func wellFormed(tok string) bool {
	if len(tok) > link.MaxTokenLen || !tokenForm.MatchString(tok) {
		return false
	}
	return strings.IndexByte(b64url, tok[len(tok)-1])%4 == 0
}

// FuzzID fuzzes the token parser and the minting around it. Properties:
//   - ID never panics, accepts exactly the tokens of the documented form
//     (at most MaxTokenLen), and names them with a contract id that does
//     not contain the token's MAC, the same id every time;
//   - a token minted from a fuzzed purpose, scope and event id always
//     parses, and changing one character of its MAC yields a token that is
//     either refused or names another link.
func FuzzID(f *testing.F) {
	kr := link.NewKeyring("k1", []byte("0123456789abcdef0123456789abcdef"))
	good, _ := kr.Mint("k1", events.PurposeSignin, "scope.acme.c-1.signin", "evt-1")
	f.Add(good, "signin", "scope.acme.c-1.signin", "evt-1", uint(0), byte('A'))
	f.Add(good[:len(good)-1], "document", "scope.acme.c-1.document.s-1", "evt-2", uint(42), byte('_'))
	f.Add(good+"A", "telehealth", "scope.acme.c-1.appointment.a-1", "", uint(7), byte(0))
	f.Add(good+"\r\n", "", "", "", uint(1), byte('\n'))
	f.Add("k1."+strings.Repeat("A", 42)+"B", "signin", "x", "y", uint(3), byte('-'))
	f.Add(strings.Repeat("k", 17)+"."+strings.Repeat("A", 43), "\x00", "\x00", "\x00", uint(99), byte(255))
	f.Add("k1\x00"+good[2:], "signin", "s", "e", uint(5), byte('='))

	f.Fuzz(func(t *testing.T, tok, purpose, scope, eventID string, pos uint, c byte) {
		id, err := link.ID(tok)
		if ok := err == nil; ok != wellFormed(tok) {
			t.Fatalf("ID(%q): accepted=%v, well-formed=%v (%v)", tok, ok, wellFormed(tok), err)
		}
		if err == nil {
			if !events.ValidID(id) || !strings.HasPrefix(id, "L") {
				t.Fatalf("ID(%q) = %q, not a contract id", tok, id)
			}
			if mac := tok[strings.IndexByte(tok, '.')+1:]; strings.Contains(id, mac[:16]) {
				t.Fatalf("id %q reveals the token %q", id, tok)
			}
			if again, _ := link.ID(tok); again != id {
				t.Fatalf("ID(%q) not deterministic: %q, %q", tok, id, again)
			}
		}

		minted, err := kr.Mint("k1", purpose, scope, eventID)
		if err != nil {
			t.Fatalf("Mint: %v", err)
		}
		mid, err := link.ID(minted)
		if err != nil || len(minted) > link.MaxTokenLen {
			t.Fatalf("minted token %q does not parse: %v", minted, err)
		}
		if again, _ := kr.Mint("k1", purpose, scope, eventID); again != minted {
			t.Fatalf("Mint not deterministic: %q, %q", minted, again)
		}
		i := len("k1.") + int(pos%43)
		r := b64url[int(c)%len(b64url)]
		if minted[i] == r {
			r = b64url[(int(c)+1)%len(b64url)]
		}
		mutated := minted[:i] + string(r) + minted[i+1:]
		if mutID, err := link.ID(mutated); err == nil && mutID == mid {
			t.Fatalf("mutated token %q names the same link as %q", mutated, minted)
		}
	})
}
