package locale

import (
	"html/template"
	"testing"
)

// TestWithHTMLFillsOnlyTheSentencesSlots checks that a fragment whose data
// holds a slot's characters is not filled in by the next fragment (which
// would put HTML inside its attribute), and that slots go where the
// sentence places them, in any order.
func TestWithHTMLFillsOnlyTheSentencesSlots(t *testing.T) {
	link := template.HTML(`<a href="x` + template.HTMLEscapeString(Slot(1)) + `">link</a>`)
	english := template.HTML(`<span lang="en">` + template.HTMLEscapeString(`" onmouseover="alert(1)`) + `</span>`)
	code := func(s string) template.HTML { return template.HTML("<code>" + s + "</code>") }
	got := WithHTML("see "+Slot(0)+" then "+Slot(1), link, english)
	want := `see <a href="x` + Slot(1) + `">link</a> then <span lang="en">&#34; onmouseover=&#34;alert(1)</span>`
	if string(got) != want {
		t.Errorf("WithHTML =\n%s\nwant\n%s", got, want)
	}
	if got := WithHTML(Slot(1)+" <b> "+Slot(0), code("a"), code("b")); got != `<code>b</code> &lt;b&gt; <code>a</code>` {
		t.Errorf("reordered slots: %s", got)
	}
	if got := WithHTML("no slot \uE0009\uE001 here, nor "+Slot(0)+Slot(0), code("a")); string(got) != "no slot \uE0009\uE001 here, nor <code>a</code>"+Slot(0) {
		t.Errorf("unknown and repeated slots: %q", got)
	}
}
