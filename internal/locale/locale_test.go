package locale

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/goodsign/monday"

	"github.com/linkpipe/linkpipe/events"
	"github.com/linkpipe/linkpipe/internal/scope"
)

func TestEmailLanguage(t *testing.T) {
	c := MustNew()
	for _, tc := range []struct{ client, practice, want string }{
		{"", "", "en"},
		{"es", "", "es"},
		{"es-MX", "en", "es"},
		{"", "es", "es"},
		{"en", "es", "en"},
		{"fr", "es", "es"}, // not spoken: the practice's
		{"fr", "de", "en"},
		{"not a tag!", "es-419", "es"},
	} {
		if got := c.ForEmail(tc.client, tc.practice).Code(); got != tc.want {
			t.Errorf("ForEmail(%q, %q) = %s, want %s", tc.client, tc.practice, got, tc.want)
		}
	}
}

func TestPageLanguage(t *testing.T) {
	c := MustNew()
	for _, tc := range []struct{ accept, practice, want string }{
		{"", "", "en"},
		{"es-ES,es;q=0.9", "", "es"},
		{"es", "en", "es"},
		{"en-US,en;q=0.9", "es", "en"},
		{"fr-FR, fr;q=0.9", "es", "es"}, // nothing spoken: the practice's
		{"fr;q=1, es;q=0.5", "", "es"},
		{"de", "", "en"},
		{";;;garbage", "es", "es"},
		{strings.Repeat("es,", 2000), "", "en"}, // too long to parse
	} {
		if got := c.ForPage(tc.accept, tc.practice).Code(); got != tc.want {
			t.Errorf("ForPage(%.30q, %q) = %s, want %s", tc.accept, tc.practice, got, tc.want)
		}
	}
}

func TestDatesAndPlurals(t *testing.T) {
	c := MustNew()
	en, es := c.English(), c.ForEmail("es", "")
	chicago, _ := time.LoadLocation("America/Chicago")
	at := time.Date(2026, 12, 1, 15, 4, 0, 0, chicago)
	for _, tc := range []struct {
		l    *Lang
		s    Style
		want string
	}{
		{en, Short, "Tue 1 Dec, 15:04 CST"},
		{es, Short, "mar 1 dic, 15:04 CST"},
		{en, DayTime, "Tue 1 Dec, 3:04 PM CST"},
		{es, DayTime, "mar 1 dic, 15:04 CST"},
		{en, LongDay, "Tuesday 1 December, 3:04 PM"},
		{es, LongDay, "martes 1 de diciembre, 15:04"},
		{en, LongDate, "Tuesday 1 December 2026 at 3:04 PM"},
		{es, LongDate, "martes 1 de diciembre de 2026, 15:04"},
		{es, ClockTime, "15:04 CST"},
		{en, DayClock, "Tue 1 Dec 15:04:00"},
		{es, DayClock, "mar 1 dic 15:04:00"},
	} {
		if got := tc.l.Date(at, tc.s); got != tc.want {
			t.Errorf("%s Date(%d) = %q, want %q", tc.l.Code(), tc.s, got, tc.want)
		}
	}
	for _, tc := range []struct {
		l    *Lang
		d    time.Duration
		want string
	}{
		{en, time.Hour, "1 hour"}, {es, time.Hour, "1 hora"},
		{en, 24 * time.Hour, "24 hours"}, {es, 24 * time.Hour, "24 horas"},
		{en, 72 * time.Hour, "3 days"}, {es, 72 * time.Hour, "3 días"},
		{en, time.Minute, "1 minute"}, {es, 90 * time.Minute, "90 minutos"},
		{es, 0, ""},
	} {
		if got := tc.l.Duration(tc.d); got != tc.want {
			t.Errorf("%s Duration(%v) = %q, want %q", tc.l.Code(), tc.d, got, tc.want)
		}
	}
}

// TestEnglishDatesAreMondays checks that English dates, written with Go's
// own names, read exactly as monday's en_GB would write them: every style,
// every month and weekday, morning and afternoon, two zones.
func TestEnglishDatesAreMondays(t *testing.T) {
	en := MustNew().English()
	chicago, _ := time.LoadLocation("America/Chicago")
	for _, loc := range []*time.Location{time.UTC, chicago} {
		for at := time.Date(2026, 1, 1, 0, 7, 5, 0, loc); at.Year() == 2026; at = at.Add(37*time.Hour + 13*time.Minute) {
			for s := Short; s <= DayClock; s++ {
				if got, want := en.Date(at, s), monday.Format(at, en.layouts[s], monday.LocaleEnGB); got != want {
					t.Fatalf("Date(%v, %d) = %q, monday says %q", at, s, got, want)
				}
			}
		}
	}
}

var verbRe = regexp.MustCompile(`%(\[\d+\])?[sdv]`)

// TestEveryMessageIsTranslated reads the packages that print messages and
// checks that every key they pass to T has a Spanish text with as many
// arguments, and that every Spanish text is used by one of them.
func TestEveryMessageIsTranslated(t *testing.T) {
	c := MustNew()
	es := c.ForEmail("es", "")
	used := map[string]bool{}
	for _, dir := range []string{"../mail", "../redeemer", "../devstack", "../mailer", "../support", "../history"} {
		for _, key := range keysUsed(t, dir) {
			used[key] = true
		}
	}
	// The refusal pages print scope.Explain's words for each reason.
	for _, reason := range []string{events.ReasonExpired, events.ReasonUsed, events.ReasonSuperseded, events.ReasonRevoked,
		events.ReasonCanceled, events.ReasonNotYetValid, events.ReasonNotFound, "something else"} {
		used[scope.Explain(reason)] = true
	}
	if len(used) < 80 {
		t.Fatalf("found only %d keys: is the parser still finding the T calls?", len(used))
	}
	for key := range used {
		tr, ok := spanish()[key]
		if !ok {
			t.Errorf("no Spanish text for %q", key)
			continue
		}
		if a, b := len(verbRe.FindAllString(key, -1)), len(verbRe.FindAllString(tr, -1)); a != b {
			t.Errorf("%q has %d arguments, its Spanish %q has %d", key, a, tr, b)
		}
		if !es.Translated(key) {
			t.Errorf("Translated(%q) = false", key)
		}
	}
	for key := range spanish() {
		if !used[key] {
			t.Errorf("Spanish text for %q, which nothing prints", key)
		}
	}
}

// keysUsed returns the string keys of every .T(key, ...) call in dir's
// non-test files: literals, and constants of the same package.
func keysUsed(t *testing.T, dir string) []string {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dir, "*.go"))
	fset := token.NewFileSet()
	consts := map[string]string{}
	var parsed []*ast.File
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		af, err := parser.ParseFile(fset, f, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		parsed = append(parsed, af)
		ast.Inspect(af, func(n ast.Node) bool {
			vs, ok := n.(*ast.ValueSpec)
			if !ok {
				return true
			}
			for i, name := range vs.Names {
				if i < len(vs.Values) {
					if lit, ok := vs.Values[i].(*ast.BasicLit); ok && lit.Kind == token.STRING {
						if s, err := strconv.Unquote(lit.Value); err == nil {
							consts[name.Name] = s
						}
					}
				}
			}
			return true
		})
	}
	var keys []string
	for _, af := range parsed {
		ast.Inspect(af, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok || len(call.Args) == 0 {
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok || sel.Sel.Name != "T" {
				return true
			}
			switch a := call.Args[0].(type) {
			case *ast.BasicLit:
				s, err := strconv.Unquote(a.Value)
				if err != nil {
					t.Fatal(err)
				}
				keys = append(keys, s)
			case *ast.CallExpr:
				// T(scope.Explain(reason)): its keys are added by the caller.
				if f, ok := a.Fun.(*ast.SelectorExpr); ok && f.Sel.Name == "Explain" {
					if x, ok := f.X.(*ast.Ident); ok && x.Name == "scope" {
						return true
					}
				}
				t.Errorf("%s: T's key is a call other than scope.Explain", fset.Position(call.Pos()))
			case *ast.Ident:
				s, ok := consts[a.Name]
				if !ok {
					t.Errorf("%s: T(%s): not a string constant of the package", fset.Position(call.Pos()), a.Name)
				}
				keys = append(keys, s)
			default:
				t.Errorf("%s: T's key is not a literal or a constant", fset.Position(call.Pos()))
			}
			return true
		})
	}
	return keys
}

// TestSpanishKeysAreOwnedOnce: a key is in one part of the catalogue only
// (two parts giving it two translations would make one silently win).
func TestSpanishKeysAreOwnedOnce(t *testing.T) {
	owner := map[string]string{}
	for name, part := range map[string]map[string]string{"clients": spanishClients(), "dev": spanishDev(), "support": spanishSupport()} {
		for k := range part {
			if o, dup := owner[k]; dup {
				t.Errorf("%q is in both %s and %s", k, o, name)
			}
			owner[k] = name
		}
	}
}
