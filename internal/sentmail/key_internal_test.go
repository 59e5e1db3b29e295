package sentmail

import (
	"strings"
	"testing"
)

// TestKeyKeepsPlainIDs: a message id of [-_=a-zA-Z0-9]{1,200} is its own
// key; anything else is hashed.
func TestKeyKeepsPlainIDs(t *testing.T) {
	for id, plain := range map[string]bool{
		"0100018c-e9aedb9a-02f9-4d12-a87d-dd0099a07f8a-000000": true, "a=b_c-D9": true,
		strings.Repeat("x", 200): true, strings.Repeat("x", 201): false, "": false, "a.b": false, "<a@b>": false, "é": false,
	} {
		if got := key(id) == id; got != plain {
			t.Errorf("key(%q) = %q: kept %v, want %v", id, key(id), got, plain)
		}
	}
}
