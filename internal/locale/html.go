package locale

import (
	"html/template"
	"strconv"
	"strings"
)

// The two private-use characters around a slot's index: neither the
// catalogue, nor an id, nor HTML escaping produces them.
const slotOpen, slotShut = "\uE000", "\uE001"

// Slot is the place of HTML fragment i in a sentence passed through T
// (WithHTML puts the fragment there), so that a translated sentence keeps
// its links and code wherever its language places them:
//
//	locale.WithHTML(l.T("Client %s of practice %s.", locale.Slot(0), locale.Slot(1)), code(client), code(practice))
func Slot(i int) string { return slotOpen + strconv.Itoa(i) + slotShut }

// WithHTML escapes a sentence and puts each HTML fragment in its slot.
// The slots are found in the escaped sentence in one pass, never in a
// fragment already put in place: data that happens to hold a slot's
// characters stays data. A slot without a fragment, or one already
// filled, stays as it is.
func WithHTML(sentence string, frags ...template.HTML) template.HTML {
	rest := template.HTMLEscapeString(sentence)
	used := make([]bool, len(frags))
	var b strings.Builder
	for {
		before, after, ok := strings.Cut(rest, slotOpen)
		b.WriteString(before)
		if !ok {
			return template.HTML(b.String())
		}
		num, tail, ok := strings.Cut(after, slotShut)
		i, err := strconv.Atoi(num)
		if !ok || err != nil || i < 0 || i >= len(frags) || used[i] {
			b.WriteString(slotOpen) // not a slot, or one already filled: text
			rest = after
			continue
		}
		used[i] = true
		b.WriteString(string(frags[i]))
		rest = tail
	}
}
