package browsertest_test

import (
	"fmt"
	"sort"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/linkpipe/linkpipe/internal/browsertest"
)

// TestAxeFindsViolations: the check is not vacuous. A page without a
// language, with grey-on-white text, an unlabelled input and an empty link
// breaks the rules it should, under a CSP that forbids every script.
func TestAxeFindsViolations(t *testing.T) {
	ctx := browsertest.Start(t)
	url := browsertest.ServeHTML(t, `<!doctype html><html><head><title>bad</title>
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'"></head>
<body><main><p style="color:#aaaaaa">faint</p><input type="text"><a href="/x"></a></main></body></html>`)
	if err := chromedp.Do(ctx, chromedp.Navigate(url)); err != nil {
		t.Fatal(err)
	}
	v, err := browsertest.Axe(ctx, browsertest.WCAG())
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	contrast := ""
	for _, x := range v {
		ids = append(ids, x.ID)
		if x.ID == "color-contrast" {
			contrast = x.String()
		}
	}
	sort.Strings(ids)
	if got, want := strings.Join(ids, " "), "color-contrast html-has-lang label link-name"; got != want {
		t.Fatalf("violations %q, want %q", got, want)
	}
	if !strings.Contains(contrast, "color-contrast (serious)") || !strings.Contains(contrast, "faint") {
		t.Fatalf("violation text %q", contrast)
	}
}

// failures records a check's failures instead of failing the test.
type failures struct {
	testing.TB
	got []string
}

func (e *failures) Errorf(format string, args ...any) {
	e.got = append(e.got, fmt.Sprintf(format, args...))
}

// TestCheckPageFindsWhatAxeCannot: a page wider than the phone, and a page
// in another language than the one asked for, fail the check at every
// viewport.
func TestCheckPageFindsWhatAxeCannot(t *testing.T) {
	ctx := browsertest.Start(t)
	url := browsertest.ServeHTML(t, `<!doctype html><html lang="en"><head><title>wide</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body><main><h1>Wide</h1><div style="width:1400px">too wide</div></main></body></html>`)
	rec := &failures{TB: t}
	browsertest.CheckPage(ctx, rec, browsertest.Page{Name: "selftest-wide", Lang: "es", URL: url})
	got := strings.Join(rec.got, "\n")
	if strings.Count(got, "scrolls sideways") != 2 || strings.Count(got, `<html lang="en">`) != 2 || len(rec.got) != 4 {
		t.Fatalf("failures:\n%s", got)
	}
}
