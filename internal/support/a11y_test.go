package support_test

import (
	"testing"
	"time"

	"github.com/linkpipe/linkpipe/internal/browsertest"
	"github.com/linkpipe/linkpipe/internal/support"
)

// TestSupportPagesAccessible checks every page of the support view with
// axe-core in Chromium, in English and Spanish, at desktop and phone
// widths (browsertest.CheckPage): the empty form, a client's links (one
// superseded, a document, a canceled appointment), a client whose address
// the mail provider refuses, one link, a client with no links, a query
// refused and an unknown link. No WCAG 2.1 AA violation nor breach of
// axe's best practices, <html lang> in the language asked for, nothing
// scrolling sideways; each is kept as a screenshot
// (browsertest.ShotsDir/a11y-support-*.png).
func TestSupportPagesAccessible(t *testing.T) {
	ctx := browsertest.Start(t, browsertest.Timeout(4*time.Minute))
	f := startStory(t)
	_, a := f.answer(t, "practice=demo&client=c-9")
	appt, ok := byScope(a, ".appt.a-1")
	if !ok {
		t.Fatalf("no appointment link: %+v", a)
	}
	base := f.st.URL + support.Path
	for _, lang := range []string{"en", "es"} {
		browsertest.CheckPages(ctx, t,
			browsertest.Page{Name: "support-form", Lang: lang, URL: base},
			browsertest.Page{Name: "support-client", Lang: lang, URL: base + "?practice=demo&client=c-9"},
			browsertest.Page{Name: "support-refused-address", Lang: lang, URL: base + "?practice=demo&client=c-10"},
			browsertest.Page{Name: "support-link", Lang: lang, URL: base + "?link=" + appt.LinkID},
			browsertest.Page{Name: "support-no-links", Lang: lang, URL: base + "?practice=demo&client=nobody-at-all"},
			browsertest.Page{Name: "support-bad-query", Lang: lang, URL: base + "?practice=demo"},
			browsertest.Page{Name: "support-not-found", Lang: lang, URL: base + "?link=Lnever"},
		)
	}
}
