package browsertest_test

import (
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
