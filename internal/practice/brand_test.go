package practice

import (
	"testing"
	"time"
)

func TestAccessibleAccentMeetsAA(t *testing.T) {
	for _, c := range []string{"#ffffff", "#ffdd00", "#9fd6c6", "#1f6f5c", "#000000", "#7b8794", "#00ff00"} {
		got := Accessible(c, DefaultAccent)
		r, g, b, ok := parseHex(got)
		if !ok {
			t.Fatalf("Accessible(%s) = %q, not a colour", c, got)
		}
		if cr := contrastWithWhite(r, g, b); cr < minContrast {
			t.Errorf("Accessible(%s) = %s: contrast %.2f < 4.5", c, got, cr)
		}
	}
	// A dark enough accent is kept as it is.
	if got := Accessible("#1f6f5c", DefaultAccent); got != "#1f6f5c" {
		t.Errorf("Accessible(#1f6f5c) = %s, want it unchanged", got)
	}
	for _, bad := range []string{"", "red", "#fff", "#12345g", "javascript:x"} {
		if got := Accessible(bad, DefaultAccent); got != DefaultAccent {
			t.Errorf("Accessible(%q) = %s, want the default", bad, got)
		}
	}
	if got := (Settings{}).ButtonColor(); got != DefaultAccent {
		t.Errorf("no accent: %s", got)
	}
}

func TestLocationDefaultsToUTC(t *testing.T) {
	if got := (Settings{}).Location(); got != time.UTC {
		t.Errorf("no zone: %v", got)
	}
	if got := (Settings{Timezone: "America/Chicago"}).Location().String(); got != "America/Chicago" {
		t.Errorf("zone: %v", got)
	}
}
