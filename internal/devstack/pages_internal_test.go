package devstack

import "testing"

// TestWithHTMLFillsOnlyTheSentencesSlots checks that a fragment whose data
// holds a slot's characters is not filled in by the next fragment (which
// would put HTML inside its attribute), and that slots go where the
// sentence places them, in any order.
func TestWithHTMLFillsOnlyTheSentencesSlots(t *testing.T) {
	got := withHTML("see "+slot(0)+" then "+slot(1), a("x"+slot(1), "link"), english(`" onmouseover="alert(1)`))
	want := `see <a href="x` + slot(1) + `">link</a> then <span lang="en">&#34; onmouseover=&#34;alert(1)</span>`
	if string(got) != want {
		t.Errorf("withHTML =\n%s\nwant\n%s", got, want)
	}
	if got := withHTML(slot(1)+" <b> "+slot(0), code("a"), code("b")); got != `<code>b</code> &lt;b&gt; <code>a</code>` {
		t.Errorf("reordered slots: %s", got)
	}
	if got := withHTML("no slot \uE0009\uE001 here, nor "+slot(0)+slot(0), code("a")); string(got) != "no slot \uE0009\uE001 here, nor <code>a</code>"+slot(0) {
		t.Errorf("unknown and repeated slots: %q", got)
	}
}
