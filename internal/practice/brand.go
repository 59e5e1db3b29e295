package practice

import (
	"fmt"
	"math"
	"strconv"
	"time"
)

// DefaultAccent is the button colour of a practice that chose none.
const DefaultAccent = "#1f6feb"

// minContrast is WCAG 2.1 AA's contrast for normal text: white button text
// on the accent must reach it.
const minContrast = 4.5

// Location is the practice's time zone, UTC when it set none (or one this
// build cannot load, which validation refuses).
func (s Settings) Location() *time.Location {
	if s.Timezone == "" {
		return time.UTC
	}
	loc, err := time.LoadLocation(s.Timezone)
	if err != nil {
		return time.UTC
	}
	return loc
}

// ButtonColor is the colour of buttons carrying white text: the practice's
// accent, darkened until white text on it meets WCAG AA (4.5:1), or
// DefaultAccent.
func (s Settings) ButtonColor() string {
	return Accessible(s.AccentColor, DefaultAccent)
}

// Accessible returns accent ("#rrggbb"), darkened in steps of 5 % towards
// black until white text on it has a contrast of at least 4.5:1; def when
// accent is not a #rrggbb colour.
func Accessible(accent, def string) string {
	r, g, b, ok := parseHex(accent)
	if !ok {
		return def
	}
	for range 40 {
		if contrastWithWhite(r, g, b) >= minContrast {
			break
		}
		r, g, b = math.Floor(r*0.95), math.Floor(g*0.95), math.Floor(b*0.95) // floor: only darker
	}
	return fmt.Sprintf("#%02x%02x%02x", int(r), int(g), int(b))
}

// Darker returns c ("#rrggbb") darkened by f (0..1), for hover states; c
// itself when it is not a colour.
func Darker(c string, f float64) string {
	r, g, b, ok := parseHex(c)
	if !ok {
		return c
	}
	k := 1 - f
	return fmt.Sprintf("#%02x%02x%02x", int(math.Round(r*k)), int(math.Round(g*k)), int(math.Round(b*k)))
}

func parseHex(c string) (r, g, b float64, ok bool) {
	if len(c) != 7 || c[0] != '#' {
		return 0, 0, 0, false
	}
	v, err := strconv.ParseUint(c[1:], 16, 32)
	if err != nil {
		return 0, 0, 0, false
	}
	return float64(v >> 16 & 0xff), float64(v >> 8 & 0xff), float64(v & 0xff), true
}

// contrastWithWhite is WCAG 2.1's contrast ratio of white on (r, g, b).
func contrastWithWhite(r, g, b float64) float64 {
	lin := func(c float64) float64 {
		c /= 255
		if c <= 0.03928 {
			return c / 12.92
		}
		return math.Pow((c+0.055)/1.055, 2.4)
	}
	l := 0.2126*lin(r) + 0.7152*lin(g) + 0.0722*lin(b)
	return 1.05 / (l + 0.05)
}
