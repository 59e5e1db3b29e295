package events

import (
	"regexp"
	"strings"
	"testing"
)

// FuzzValidIDIsItsPattern: ValidID accepts exactly what its documented
// pattern matches.
func FuzzValidIDIsItsPattern(f *testing.F) {
	pattern := regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)
	for _, s := range []string{"", "a", "Z-9_", "a b", "a.b", "é", "a\n", "\x00", strings.Repeat("x", 64), strings.Repeat("x", 65), "a$", "-"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := ValidID(s), pattern.MatchString(s); got != want {
			t.Errorf("ValidID(%q) = %v, the pattern says %v", s, got, want)
		}
	})
}
