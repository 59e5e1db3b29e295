package devstack

import (
	"bytes"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/linkpipe/linkpipe/internal/locale"
)

// TestRunErrorsInThePageLanguage: what a step could not do shows on the
// run's page under the step's label in the page's language; the reason is
// translated when linkpipe wrote it (Clínica Sol not ready yet) and kept as
// English, marked lang="en", when it comes from elsewhere (a NATS error).
func TestRunErrorsInThePageLanguage(t *testing.T) {
	cat := locale.MustNew()
	sc := scenarios()[slices.IndexFunc(scenarios(), func(s *scenario) bool { return s.Name == "practice" })]
	r := newRun(sc, time.Now())
	r.Done = 1
	r.Errors = []stepError{{Step: 1, Err: errSolNotReady}, {Step: 1, Err: errors.New("nats: timeout")}}
	v := &runView{ID: r.ID, Client: r.Client, Practice: r.Practice, Email: r.Email, Next: r.Done, At: time.Now(), NoInbox: true}
	for _, tc := range []struct {
		lang string
		want []string
	}{
		{"es", []string{
			`Enviar un enlace de inicio de sesión: La configuración de Clínica Sol aún no ha llegado; vuelva a intentarlo en un momento</p>`,
			`Enviar un enlace de inicio de sesión: <span lang="en">nats: timeout</span>`,
			`<html lang="es">`, "Esta instancia envía a través de SES",
		}},
		{"en", []string{
			`Send a sign-in link: Clínica Sol&#39;s settings have not arrived yet; try again in a moment</p>`,
			`Send a sign-in link: <span lang="en">nats: timeout</span>`,
		}},
	} {
		l, _ := cat.Lang(tc.lang)
		var b bytes.Buffer
		if err := runTmpl.ExecuteTemplate(&b, "run", newRunPage(l, r, v)); err != nil {
			t.Fatal(err)
		}
		for _, w := range tc.want {
			if !strings.Contains(b.String(), w) {
				t.Errorf("%s: no %q in:\n%s", tc.lang, w, b.String())
			}
		}
	}
}
