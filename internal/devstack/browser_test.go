package devstack_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/linkpipe/linkpipe/internal/browsertest"
	"github.com/linkpipe/linkpipe/internal/devstack"
)

// TestNewcomerFlowInBrowser is what the README promises a newcomer, in a
// real headless Chromium against the real dev stack: the /dev page sends a
// sign-in request, the email shows up in the inbox, its link opens the
// confirm page, and confirming lands on the demo portal, which verifies the
// ticket. Screenshots of each step go to /tmp/linkpipe-shots/newcomer-*.png.
func TestNewcomerFlowInBrowser(t *testing.T) {
	ctx := browsertest.Start(t, browsertest.WindowSize(900, 900))
	st, err := devstack.Start(context.Background(), devstack.Config{DataDir: t.TempDir(), HTTPAddr: "127.0.0.1:0", NATSPort: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })

	shot := func(name string) {
		t.Helper()
		browsertest.Shot(ctx, t, "newcomer-"+name+".png")
	}

	// 1. The dev page: fill in the form and send.
	if err := chromedp.Do(ctx, chromedp.Navigate(st.URL+"/dev"), chromedp.WaitVisible(chromedp.CSS("#email"))); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(ctx,
		chromedp.SetValue(chromedp.CSS("#client"), "newcomer-1"),
		chromedp.SetValue(chromedp.CSS("#name"), "Robin Newcomer"),
		chromedp.SetValue(chromedp.CSS("#email"), "robin@example.com"),
		chromedp.SetValue(chromedp.CSS("#return_to"), "/appointments"),
	); err != nil {
		t.Fatal(err)
	}
	shot("1-dev")
	if _, err := chromedp.RunResponse(ctx, chromedp.Click(chromedp.CSS("form button"))); err != nil {
		t.Fatal(err)
	}

	// 2. The inbox (it waits for the email before answering): the email's "Open link".
	loc, _ := chromedp.Run(ctx, chromedp.Location())
	if !strings.Contains(loc, "/inbox?since=") {
		t.Fatalf("after sending: %s, want the inbox", loc)
	}
	if err := chromedp.Do(ctx, chromedp.WaitVisible(chromedp.CSS("a.btn"))); err != nil {
		t.Fatalf("no email in the inbox: %v", err)
	}
	row, _ := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("table")))
	if !strings.Contains(row, "robin@example.com") || !strings.Contains(row, "Demo Practice") {
		t.Fatalf("inbox row %q", row)
	}
	shot("2-inbox")

	// 3. The link: a confirm page that consumes nothing.
	if _, err := chromedp.RunResponse(ctx, chromedp.Click(chromedp.CSS("a.btn"))); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(ctx, chromedp.WaitVisible(chromedp.CSS("main form button"))); err != nil {
		t.Fatal(err)
	}
	if h1, _ := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("h1"))); !strings.Contains(strings.ToLower(h1), "sign in") {
		t.Fatalf("confirm page heading %q", h1)
	}
	shot("3-confirm")

	// 4. Confirm: the demo portal shows the verified ticket.
	if _, err := chromedp.RunResponse(ctx, chromedp.Click(chromedp.CSS("main form button"))); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(ctx, chromedp.WaitVisible(chromedp.CSS("#verdict"))); err != nil {
		t.Fatal(err)
	}
	loc, _ = chromedp.Run(ctx, chromedp.Location())
	verdict, _ := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("#verdict")))
	claims, _ := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("#claims")))
	if !strings.HasPrefix(loc, st.URL+"/portal/appointments?ticket=") || !strings.Contains(verdict, "Ticket verified") ||
		!strings.Contains(claims, `"sub": "newcomer-1"`) {
		t.Fatalf("portal: %s %q %q", loc, verdict, claims)
	}
	shot("4-portal")
}

// TestScenarioPanelInBrowser: on /dev a newcomer presses a scenario's
// button and lands on its run page, which shows the email as it arrives
// and, without a reload, the second email and the first link turned
// superseded when the next step is taken (here from outside the page, as
// another tab would). Screenshots: /tmp/linkpipe-shots/panel-*.png.
func TestScenarioPanelInBrowser(t *testing.T) {
	ctx := browsertest.Start(t, browsertest.WindowSize(1100, 900))
	st, err := devstack.Start(context.Background(), devstack.Config{DataDir: t.TempDir(), HTTPAddr: "127.0.0.1:0", NATSPort: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })

	if err := chromedp.Do(ctx, chromedp.Navigate(st.URL+"/dev"), chromedp.WaitVisible(chromedp.CSS(`form[action="/dev/scenarios/signin"] button`))); err != nil {
		t.Fatal(err)
	}
	browsertest.Shot(ctx, t, "panel-1-dev.png")
	if _, err := chromedp.RunResponse(ctx, chromedp.Click(chromedp.CSS(`form[action="/dev/scenarios/signin"] button`))); err != nil {
		t.Fatal(err)
	}
	loc, _ := chromedp.Run(ctx, chromedp.Location())
	if !strings.Contains(loc, "/dev/runs/run-") {
		t.Fatalf("after starting: %s, want the run's page", loc)
	}
	live := func(what string, ok func(text string) bool) {
		t.Helper()
		var text string
		for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			if text, _ = chromedp.Run(ctx, chromedp.Text(chromedp.CSS("#live"))); ok(text) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s; the page shows:\n%s", what, text)
			}
		}
	}
	live("the sign-in email on the page", func(s string) bool { return strings.Count(s, "Your sign-in link") == 1 && strings.Contains(s, "Works") })
	browsertest.Shot(ctx, t, "panel-2-run.png")

	id := loc[strings.LastIndex(loc, "/")+1:]
	panel{t, st}.step(id, 1)
	live("the second email and the superseded link, without a reload", func(s string) bool {
		return strings.Count(s, "Your sign-in link") == 2 && strings.Contains(s, "Refused: a newer link")
	})
	if now, _ := chromedp.Run(ctx, chromedp.Location()); now != loc {
		t.Fatalf("the page navigated to %s", now)
	}
	browsertest.Shot(ctx, t, "panel-3-run-updated.png")
}
