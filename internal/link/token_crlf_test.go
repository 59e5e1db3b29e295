package link_test

import (
	"errors"
	"testing"

	"github.com/linkpipe/linkpipe/internal/link"
)

// FuzzID found this: encoding/base64 skips CR and LF even in strict mode,
// so a "MAC" of 43 bytes with line breaks in it decoded without error and
// ID accepted a token that is not of the documented form.
func TestIDRefusesLineBreaks(t *testing.T) {
	kr := link.NewKeyring("k1", []byte("0123456789abcdef0123456789abcdef"))
	tok, _ := kr.Mint("k1", "signin", "p", "e")
	for _, bad := range []string{
		"0.00000000000000000\r\n00000000000000000000000\n", // the fuzzer's input
		tok[:20] + "\r\n" + tok[22:],
		tok[:len(tok)-1] + "\n",
		tok[:10] + "\r" + tok[11:],
	} {
		if id, err := link.ID(bad); !errors.Is(err, link.ErrMalformedToken) {
			t.Errorf("ID(%q) = %q, %v; want ErrMalformedToken", bad, id, err)
		}
	}
}
