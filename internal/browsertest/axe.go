package browsertest

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/linkpipe/linkpipe/internal/npmdeps"
)

// Rules are the axe-core rule tags a check runs.
type Rules []string

// WCAG is WCAG 2.0 and 2.1, levels A and AA: what every page and email
// must meet.
func WCAG() Rules { return Rules{"wcag2a", "wcag2aa", "wcag21a", "wcag21aa"} }

// WCAGAndBestPractice adds axe-core's best practices (one main landmark,
// content inside landmarks, one h1, named table headers) to WCAG: what
// pages meet. Emails are held to WCAG only: mail clients re-wrap their
// HTML in their own page.
func WCAGAndBestPractice() Rules { return append(WCAG(), "best-practice") }

// Page is one page to check for accessibility.
type Page struct {
	// Name names the page in failures and screenshot files ("refusal-expired").
	Name string
	// URL is where the browser opens it.
	URL string
	// Lang is the language asked for (sent as Accept-Language) and that the
	// page must declare in <html lang>: "en", "es".
	Lang string
	// Then, when set, runs after the page loads (pressing a button, say);
	// the page checked is the one it lands on.
	Then chromedp.Action[chromedp.Void]
	// Rules are the rules checked; nil means WCAGAndBestPractice.
	Rules Rules
}

// Viewport is a window size a page is checked at.
type Viewport struct {
	Name          string
	Width, Height int64
	Mobile        bool
}

// Viewports are the sizes every page is checked at: a desktop and a
// 375 px wide phone.
func Viewports() []Viewport {
	return []Viewport{
		{Name: "desktop", Width: 1280, Height: 800},
		{Name: "phone", Width: 375, Height: 812, Mobile: true},
	}
}

// Violation is one axe-core rule a page breaks, with the elements that
// break it.
type Violation struct {
	ID     string `json:"id"`
	Impact string `json:"impact"`
	Help   string `json:"help"`
	Nodes  []struct {
		Target         json.RawMessage `json:"target"`
		HTML           string          `json:"html"`
		FailureSummary string          `json:"failureSummary"`
	} `json:"nodes"`
}

func (v Violation) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s (%s): %s", v.ID, v.Impact, v.Help)
	for _, n := range v.Nodes {
		fmt.Fprintf(&b, "\n    at %s: %s\n      %s", n.Target, n.HTML, strings.ReplaceAll(n.FailureSummary, "\n", "\n      "))
	}
	return b.String()
}

// Axe runs axe-core (testdeps/node_modules/axe-core) on the document the
// tab shows and returns the rules (by tag: WCAG(), ...) it breaks. The page's
// Content-Security-Policy does not stop it (the script is evaluated through
// the DevTools protocol).
func Axe(ctx context.Context, rules Rules) ([]Violation, error) {
	deps, err := npmdeps.Find("testdeps")
	if err != nil {
		return nil, err
	}
	path := filepath.Join(deps, "node_modules", "axe-core", "axe.min.js")
	if err := npmdeps.Install(deps, path); err != nil {
		return nil, err
	}
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](string(src)+"\n;typeof axe === 'object'")); err != nil {
		return nil, fmt.Errorf("loading axe-core: %w", err)
	}
	tags, _ := json.Marshal(rules)
	run := `axe.run(document, {runOnly: {type: 'tag', values: ` + string(tags) + `}, resultTypes: ['violations']}).then(r => r.violations)`
	v, err := chromedp.Run(ctx, chromedp.Evaluate[[]Violation](run, chromedp.EvalAwaitPromise))
	if err != nil {
		return nil, fmt.Errorf("axe.run: %w", err)
	}
	return v, nil
}

// CheckPages checks each page at every viewport (CheckPage).
func CheckPages(ctx context.Context, t testing.TB, pages ...Page) {
	t.Helper()
	for _, p := range pages {
		CheckPage(ctx, t, p)
	}
}

// CheckPage opens p at every viewport, in p.Lang, and fails the test with
// each violation of p.Rules axe-core finds there, when the page does not
// declare p.Lang, and when it scrolls sideways (reflow, WCAG 1.4.10). It
// keeps a screenshot of each as ShotsDir/a11y-<name>-<lang>-<viewport>.png.
func CheckPage(ctx context.Context, t testing.TB, p Page) {
	t.Helper()
	if p.Lang == "" {
		t.Fatalf("page %s: no language", p.Name)
	}
	for _, vp := range Viewports() {
		where := fmt.Sprintf("%s (%s, %s %dpx)", p.Name, p.Lang, vp.Name, vp.Width)
		var emulate []chromedp.EmulateViewportOption
		if vp.Mobile {
			emulate = append(emulate, chromedp.EmulateMobile, chromedp.EmulatePortrait)
		}
		err := chromedp.Do(ctx,
			chromedp.EmulateViewport(vp.Width, vp.Height, emulate...),
			setBypassCSP(),
			acceptLanguage(p.Lang),
			chromedp.Navigate(p.URL),
		)
		if err == nil && p.Then != nil {
			err = chromedp.Do(ctx, p.Then)
		}
		if err != nil {
			t.Errorf("%s: opening %s: %v", where, p.URL, err)
			continue
		}
		lang, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.documentElement.lang`))
		if err != nil || !strings.HasPrefix(strings.ToLower(lang), p.Lang) {
			t.Errorf("%s: <html lang=%q> (%v), want %q", where, lang, err, p.Lang)
		}
		// Reflow (WCAG 1.4.10), which axe cannot see: nothing makes the page
		// scroll sideways.
		if wide, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.documentElement.scrollWidth - document.documentElement.clientWidth`)); err != nil || wide > 0 {
			t.Errorf("%s: the page scrolls sideways by %d px (%v): content wider than the screen", where, wide, err)
		}
		rules := p.Rules
		if rules == nil {
			rules = WCAGAndBestPractice()
		}
		violations, err := Axe(ctx, rules)
		if err != nil {
			t.Errorf("%s: %v", where, err)
			continue
		}
		for _, v := range violations {
			t.Errorf("%s: %s", where, v)
		}
		Shot(ctx, t, fmt.Sprintf("a11y-%s-%s-%s.png", p.Name, p.Lang, vp.Name))
	}
}

// ServeHTML serves html (a rendered email, say) at the returned URL until
// the test ends.
func ServeHTML(t testing.TB, html string) string {
	t.Helper()
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write([]byte(html))
	}))
	t.Cleanup(s.Close)
	return s.URL + "/"
}

func setBypassCSP() chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		_, err := cdp.Call(ctx, t, page.SetBypassCSP, page.SetBypassCSPParams{Enabled: true})
		return err
	})
}

func acceptLanguage(lang string) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		_, err := cdp.Call(ctx, t, network.SetExtraHTTPHeaders, network.SetExtraHTTPHeadersParams{
			Headers: network.Headers{"Accept-Language": lang}})
		return err
	})
}
