// Package locale owns the languages linkpipe speaks: to a practice's
// clients (emails, the redeemer's pages) and to its staff and developers
// (the support view, the dev pages and inbox).
//
// It decides which languages exist (English and Spanish, see [Supported]()),
// which one an email or a page is in, and how text, plurals and dates read in
// each:
//
//   - an email is in the client's locale, else the practice's, else English
//     ([Catalog.ForEmail]);
//   - a page is in the browser's Accept-Language, else the practice's
//     locale, else English ([Catalog.ForPage]);
//   - every sentence goes through a message catalogue (golang.org/x/text's
//     message and catalog packages): the key is the English sentence, a
//     [Lang] prints it in its language ([Lang.T]), plural forms follow
//     x/text's CLDR rules ([Lang.Duration]);
//   - day and month names come from github.com/goodsign/monday's locale
//     tables, laid out by each language's own patterns ([Lang.Date]);
//   - a page's sentence that holds links or code is translated with a
//     [Slot] for each and escaped with the HTML put in place ([WithHTML]),
//     so each language places them where it needs.
//
// A [Catalog] is immutable once built and safe for concurrent use.
package locale

import (
	"fmt"
	"strings"
	"time"

	"github.com/goodsign/monday"
	"golang.org/x/text/feature/plural"
	"golang.org/x/text/language"
	"golang.org/x/text/message"
	"golang.org/x/text/message/catalog"
)

// Supported returns the languages linkpipe speaks, the first the fallback.
func Supported() []language.Tag { return []language.Tag{language.English, language.Spanish} }

// Style is a way of writing a time.
type Style int

// Time styles.
const (
	// Short is a day and time with the zone: "Tue 24 Nov, 14:05 CST" (link
	// expiry in sign-in and document emails).
	Short Style = iota
	// DayTime is a short day and time on a 12- or 24-hour clock with the
	// zone: "Tue 1 Dec, 9:00 AM CST" (appointments in subjects).
	DayTime
	// LongDay is the full day and time without the zone: "Tuesday
	// 1 December, 9:00 AM".
	LongDay
	// ClockTime is the time of day with the zone: "9:50 AM CST".
	ClockTime
	// LongDate is the full date with the year and time: "Tuesday
	// 1 December 2026 at 9:00 AM" (pages).
	LongDate
	// DayClock is a short day and the time to the second on a 24-hour
	// clock, without the zone: "Tue 1 Dec 15:04:05" (the dev inbox's rows).
	DayClock
)

// Lang is one language: its printer, its date names and layouts.
type Lang struct {
	tag     language.Tag
	base    string
	p       *message.Printer
	dates   monday.Locale
	layouts map[Style]string
}

// Catalog holds every language's messages.
type Catalog struct {
	langs   []*Lang // in the order of Supported
	matcher language.Matcher
}

// New builds the catalogue. It fails only if a message is malformed.
func New() (*Catalog, error) {
	b := catalog.NewBuilder(catalog.Fallback(language.English))
	for _, m := range plurals() {
		if err := b.Set(language.English, m.key, plural.Selectf(1, "%d", "one", m.enOne, "other", m.enOther)); err != nil {
			return nil, fmt.Errorf("locale: %q: %w", m.key, err)
		}
		if err := b.Set(language.Spanish, m.key, plural.Selectf(1, "%d", "one", m.esOne, "other", m.esOther)); err != nil {
			return nil, fmt.Errorf("locale: %q: %w", m.key, err)
		}
	}
	for key, es := range spanish() {
		if err := b.SetString(language.Spanish, key, es); err != nil {
			return nil, fmt.Errorf("locale: %q: %w", key, err)
		}
	}
	c := &Catalog{matcher: language.NewMatcher(Supported())}
	layouts := map[language.Tag]map[Style]string{
		language.English: {
			Short:     "Mon 2 Jan, 15:04 MST",
			DayTime:   "Mon 2 Jan, 3:04 PM MST",
			LongDay:   "Monday 2 January, 3:04 PM",
			ClockTime: "3:04 PM MST",
			LongDate:  "Monday 2 January 2006 at 3:04 PM",
			DayClock:  "Mon 2 Jan 15:04:05",
		},
		language.Spanish: {
			Short:     "Mon 2 Jan, 15:04 MST",
			DayTime:   "Mon 2 Jan, 15:04 MST",
			LongDay:   "Monday 2 de January, 15:04",
			ClockTime: "15:04 MST",
			LongDate:  "Monday 2 de January de 2006, 15:04",
			DayClock:  "Mon 2 Jan 15:04:05",
		},
	}
	dates := map[language.Tag]monday.Locale{language.English: monday.LocaleEnGB, language.Spanish: monday.LocaleEsES}
	for _, tag := range Supported() {
		base, _ := tag.Base()
		l := &Lang{tag: tag, base: base.String(), dates: dates[tag], layouts: layouts[tag]}
		l.p = message.NewPrinter(tag, message.Catalog(b))
		c.langs = append(c.langs, l)
	}
	return c, nil
}

// MustNew is New for package-level catalogues built from this package's own
// messages, which a test proves well formed.
func MustNew() *Catalog {
	c, err := New()
	if err != nil {
		panic(err)
	}
	return c
}

// English is the fallback language.
func (c *Catalog) English() *Lang { return c.langs[0] }

// Lang returns the language a BCP 47 tag names, and whether linkpipe speaks
// it ("es-MX" is Spanish; "fr" is not spoken).
func (c *Catalog) Lang(bcp47 string) (*Lang, bool) {
	bcp47 = strings.TrimSpace(bcp47)
	if bcp47 == "" {
		return nil, false
	}
	tag, err := language.Parse(bcp47)
	if err != nil {
		return nil, false
	}
	return c.match(tag)
}

func (c *Catalog) match(tags ...language.Tag) (*Lang, bool) {
	_, i, conf := c.matcher.Match(tags...)
	if conf == language.No {
		return nil, false
	}
	return c.langs[i], true
}

// ForEmail is the language of an email: the client's locale, else the
// practice's, else English.
func (c *Catalog) ForEmail(clientLocale, practiceLocale string) *Lang {
	for _, s := range []string{clientLocale, practiceLocale} {
		if l, ok := c.Lang(s); ok {
			return l
		}
	}
	return c.English()
}

// ForPage is the language of a page: the best spoken language of the
// browser's Accept-Language, else the practice's locale, else English.
func (c *Catalog) ForPage(acceptLanguage, practiceLocale string) *Lang {
	if len(acceptLanguage) <= 1024 { // a longer header is not worth parsing
		if tags, _, err := language.ParseAcceptLanguage(acceptLanguage); err == nil && len(tags) > 0 {
			if l, ok := c.match(tags...); ok {
				return l
			}
		}
	}
	if l, ok := c.Lang(practiceLocale); ok {
		return l
	}
	return c.English()
}

// Code is the language's BCP 47 base ("en", "es"): <html lang>.
func (l *Lang) Code() string { return l.base }

// Tag is the language's tag.
func (l *Lang) Tag() language.Tag { return l.tag }

// T prints the message whose English text is key, in this language, with
// fmt-style arguments. A key the catalogue lacks prints as the English text
// (a test proves every key used has a translation).
func (l *Lang) T(key string, args ...any) string {
	return l.p.Sprintf(key, args...)
}

// Translated reports whether this language has its own text for key
// (English always has).
func (l *Lang) Translated(key string) bool {
	if l.tag == language.English {
		return true
	}
	_, ok := spanish()[key]
	if !ok {
		for _, m := range plurals() {
			if m.key == key {
				return true
			}
		}
	}
	return ok
}

// Date writes t (already in the zone it should be read in) in a style.
func (l *Lang) Date(t time.Time, s Style) string {
	if l.dates == monday.LocaleEnGB {
		// Go's own names are English: the same text, without monday's
		// replacements (a fifth of an English email's rendering).
		return t.Format(l.layouts[s])
	}
	return monday.Format(t, l.layouts[s], l.dates)
}

// Duration says d in words with this language's plural rules: "24 hours",
// "3 days", "90 minutes"; "" for d <= 0.
func (l *Lang) Duration(d time.Duration) string {
	switch {
	case d <= 0:
		return ""
	case d >= 48*time.Hour && d%(24*time.Hour) == 0:
		return l.p.Sprintf(keyDays, int64(d/(24*time.Hour)))
	case d >= time.Hour && d%time.Hour == 0:
		return l.p.Sprintf(keyHours, int64(d/time.Hour))
	case d >= 2*time.Hour:
		return l.p.Sprintf(keyHours, int64((d+30*time.Minute)/time.Hour))
	default:
		return l.p.Sprintf(keyMinutes, int64((d+30*time.Second)/time.Minute))
	}
}
