package link_test

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/linkpipe/linkpipe/events"
	"github.com/linkpipe/linkpipe/internal/link"
)

var key32 = base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))

func TestMintIsDeterministicAndKeyed(t *testing.T) {
	kr, err := link.ParseKeyring("k2:" + key32 + ",k1:" + base64.StdEncoding.EncodeToString([]byte("fedcba9876543210fedcba9876543210")))
	if err != nil {
		t.Fatal(err)
	}
	if kr.CurrentKid() != "k2" {
		t.Fatalf("current kid %q", kr.CurrentKid())
	}
	a, _ := kr.Mint("k2", events.PurposeSignin, "p", "e1")
	b, _ := kr.Mint("k2", events.PurposeSignin, "p", "e1")
	if a != b {
		t.Fatal("same inputs, different tokens")
	}
	for _, other := range [][4]string{{"k1", "signin", "p", "e1"}, {"k2", "document", "p", "e1"}, {"k2", "signin", "q", "e1"}, {"k2", "signin", "p", "e2"}} {
		tok, err := kr.Mint(other[0], other[1], other[2], other[3])
		if err != nil || tok == a {
			t.Fatalf("%v: %q %v", other, tok, err)
		}
	}
	if !strings.HasPrefix(a, "k2.") || len(a) != len("k2.")+43 {
		t.Fatalf("token shape %q", a)
	}
	if _, err := kr.Mint("k9", "signin", "p", "e"); !errors.Is(err, link.ErrUnknownKid) {
		t.Fatalf("unknown kid: %v", err)
	}
	id, err := link.ID(a)
	if err != nil || !events.ValidID(id) || strings.Contains(id, a[3:]) {
		t.Fatalf("id %q %v", id, err)
	}
}

func TestParseKeyringRefusesBadKeys(t *testing.T) {
	for _, s := range []string{"", "short", "k1:" + base64.StdEncoding.EncodeToString([]byte("16 bytes only!!!")),
		"bad kid!:" + key32, "k1:" + key32 + ",k1:" + key32, strings.Repeat("k", 17) + ":" + key32, "k.1:" + key32} {
		if _, err := link.ParseKeyring(s); !errors.Is(err, link.ErrBadKey) {
			t.Errorf("%q: got %v", s, err)
		}
	}
	kr, err := link.ParseKeyring(key32)
	if err != nil || kr.CurrentKid() != link.DefaultKid {
		t.Fatalf("plain key: %v %v", kr, err)
	}
	if kr, err := link.ParseKeyring(strings.Repeat("k", 16) + ":" + key32); err != nil || kr.CurrentKid() != strings.Repeat("k", 16) {
		t.Fatalf("16-character key id: %v %v", kr, err)
	}
}

func TestIDRefusesMalformedTokens(t *testing.T) {
	kr := link.NewKeyring("k1", []byte("0123456789abcdef0123456789abcdef"))
	tok, _ := kr.Mint("k1", "signin", "p", "e")
	for _, bad := range []string{"", tok[:len(tok)-1], tok + "A", strings.Repeat("A", 10000), "k1" + tok[2:3] + strings.Repeat("*", 43),
		"k1" + strings.Repeat("A", 44), "bad kid." + tok[3:], "k1.\x00" + tok[4:]} {
		if _, err := link.ID(bad); !errors.Is(err, link.ErrMalformedToken) {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestPolicyFromBounds(t *testing.T) {
	p := link.PolicyFrom(&events.Policy{SigninTTL: "2h", DocumentTTL: "1000h", TelehealthGrace: "0s", Reminders: []string{}})
	if p.SigninTTL != 2*time.Hour || p.DocumentTTL != 72*time.Hour || p.TelehealthGrace != 0 || len(p.Reminders) != 0 {
		t.Fatalf("%+v", p)
	}
	d := link.PolicyFrom(nil)
	if d.SigninTTL != 24*time.Hour || d.TelehealthGrace != 30*time.Minute || len(d.Reminders) != 2 {
		t.Fatalf("%+v", d)
	}
}
