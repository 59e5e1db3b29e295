// Package browsertest drives a real headless Chromium (Debian's, at
// ChromiumPath) for tests: starting it, the test skipping and saying why when
// Chromium is not installed; keeping screenshots for people to look at; and
// checking pages with axe-core (from testdeps/) against WCAG 2.1 AA at a
// desktop and a phone width.
package browsertest

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// ChromiumPath is where the browser tests expect Chromium
// (`apt-get install chromium`).
const ChromiumPath = "/usr/bin/chromium"

// ShotsDir is where screenshots are kept for people to look at.
const ShotsDir = "/tmp/linkpipe-shots"

type config struct {
	width, height int
	timeout       time.Duration
	extra         []chromedp.ExecAllocatorOption
}

// Option changes how Start starts the browser.
type Option func(*config)

// WindowSize sets the browser window (default 1280x800).
func WindowSize(width, height int) Option {
	return func(c *config) { c.width, c.height = width, height }
}

// Timeout bounds everything the test does in the browser (default 60 s).
func Timeout(d time.Duration) Option {
	return func(c *config) { c.timeout = d }
}

// Flags adds or overrides Chromium flags.
func Flags(opts ...chromedp.ExecAllocatorOption) Option {
	return func(c *config) { c.extra = append(c.extra, opts...) }
}

// Start starts a headless Chromium for the test, with its own profile, and
// returns the context of its first tab, bounded by the Timeout option. The
// browser stops when the test ends. The test skips, saying why, when
// Chromium is not installed.
func Start(t testing.TB, opts ...Option) context.Context {
	t.Helper()
	if _, err := os.Stat(ChromiumPath); err != nil {
		t.Skip("chromium is not installed at " + ChromiumPath + "; the browser tests need it (apt-get install chromium)")
	}
	c := config{width: 1280, height: 800, timeout: 60 * time.Second}
	for _, o := range opts {
		o(&c)
	}
	flags := append([]chromedp.ExecAllocatorOption{
		chromedp.ExecPath(ChromiumPath),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(c.width, c.height),
	}, c.extra...)
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), flags...)
	t.Cleanup(cancelA)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(cancel)
	if err := chromedp.Do(ctx); err != nil { // start the browser without a deadline
		t.Fatalf("chromium did not start: %v", err)
	}
	ctx, cancelT := context.WithTimeout(ctx, c.timeout)
	t.Cleanup(cancelT)
	return ctx
}

// Shot takes a full-page screenshot of the tab, keeps it as ShotsDir/name
// (best effort) and returns it; it fails the test when the screenshot cannot
// be taken or is implausibly small.
func Shot(ctx context.Context, t testing.TB, name string) []byte {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil || len(png) < 1000 {
		t.Fatalf("screenshot %s: %d bytes, %v", name, len(png), err)
	}
	if err := os.MkdirAll(ShotsDir, 0o755); err == nil {
		_ = os.WriteFile(filepath.Join(ShotsDir, name), png, 0o644)
	}
	return png
}
