package mail_test

import (
	"flag"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/linkpipe/linkpipe/internal/mail"
	"github.com/linkpipe/linkpipe/internal/practice"
)

// update rewrites the golden files: go test ./internal/mail -run Golden -update
var update = flag.Bool("update", false, "rewrite testdata/golden from the renderer")

// branded is a practice with every branding field set: its own time zone,
// Spanish as its default language, a logo and a light accent colour the
// renderer must darken for contrast.
func branded() practice.Settings {
	p := settings()
	p.Timezone, p.Locale = "America/New_York", "es"
	p.LogoURL, p.AccentColor = "https://acme.example/logo.png", "#7fd3ff"
	return p
}

// TestGolden renders every email kind in every language, for a plain and a
// branded practice, and compares subject, text and HTML with
// testdata/golden/<lang>/<practice>/<name>.txt. A change to any email shows
// up here as a diff to read before -update.
func TestGolden(t *testing.T) {
	practices := map[string]practice.Settings{"plain": settings(), "branded": branded()}
	seen := map[string]bool{}
	for _, lang := range []string{"en", "es"} {
		for pname, p := range practices {
			emails := everyEmail()
			names := make([]string, 0, len(emails))
			for n := range emails {
				names = append(names, n)
			}
			sort.Strings(names)
			for _, name := range names {
				c := emails[name]
				c.To.Locale = lang
				link := url
				if c.LinkID == "" {
					link = ""
				}
				m, err := mail.Render(c, p, link)
				if err != nil {
					t.Fatalf("%s/%s/%s: %v", lang, pname, name, err)
				}
				got := "Subject: " + m.Subject + "\n\n" + m.Text + "\n---- HTML ----\n" + m.HTML
				file := filepath.Join("testdata", "golden", lang, pname, name+".txt")
				seen[file] = true
				if *update {
					if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
						t.Fatal(err)
					}
					if err := os.WriteFile(file, []byte(got), 0o644); err != nil {
						t.Fatal(err)
					}
					continue
				}
				want, err := os.ReadFile(file)
				if err != nil {
					t.Errorf("%v (run go test ./internal/mail -run Golden -update)", err)
					continue
				}
				if got != string(want) {
					t.Errorf("%s differs from the renderer's output:\n%s", file, firstDiff(string(want), got))
				}
			}
		}
	}
	// No golden file is left over from a kind or language removed.
	_ = filepath.Walk(filepath.Join("testdata", "golden"), func(path string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() && !seen[path] {
			t.Errorf("%s is no email's golden file", path)
		}
		return nil
	})
}

// firstDiff shows the first line that differs.
func firstDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	for i := 0; i < len(w) || i < len(g); i++ {
		var wl, gl string
		if i < len(w) {
			wl = w[i]
		}
		if i < len(g) {
			gl = g[i]
		}
		if wl != gl {
			return "line " + strconv.Itoa(i+1) + ":\n  want " + wl + "\n  got  " + gl
		}
	}
	return ""
}
