package mailer_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/linkpipe/linkpipe/internal/mail"
)

// TestInboxLanguage: the inbox pages speak the browser's Accept-Language
// (Spanish or English), say so in <html lang> and Content-Language, and
// vary on it. An email keeps its own language on a page in another: its
// subject and text say it in lang; the day it arrived is in the page's.
func TestInboxLanguage(t *testing.T) {
	s := newSink(t)
	srv := httptest.NewServer(s.Handler("/inbox"))
	defer srv.Close()
	type check struct {
		accept, lang, path string
		want, notWant      []string
	}
	run := func(checks []check) {
		t.Helper()
		for _, tc := range checks {
			req, _ := http.NewRequest(http.MethodGet, srv.URL+tc.path, nil)
			if tc.accept != "" {
				req.Header.Set("Accept-Language", tc.accept)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			body := string(b)
			if resp.Header.Get("Content-Language") != tc.lang || resp.Header.Get("Vary") != "Accept-Language" ||
				!strings.Contains(body, `<html lang="`+tc.lang+`">`) {
				t.Errorf("%s (%q): Content-Language %q, Vary %q, want %s in:\n%.600s", tc.path, tc.accept,
					resp.Header.Get("Content-Language"), resp.Header.Get("Vary"), tc.lang, body)
			}
			for _, w := range tc.want {
				if !strings.Contains(body, w) {
					t.Errorf("%s (%q): no %q in:\n%s", tc.path, tc.accept, w, body)
				}
			}
			for _, w := range tc.notWant {
				if strings.Contains(body, w) {
					t.Errorf("%s (%q): %q in:\n%s", tc.path, tc.accept, w, body)
				}
			}
		}
	}
	run([]check{
		{"", "en", "/inbox", []string{"No email yet"}, nil},
		{"es-ES,es;q=0.9", "es", "/inbox", []string{"Aún no hay correos"}, nil},
		{"", "en", "/inbox/9", []string{"There is no email with that id"}, nil},
		{"es", "es", "/inbox/9", []string{"No hay ningún correo con ese id"}, nil},
	})

	if _, err := s.Send(context.Background(), &mail.Message{From: "a@example.com", To: "pat@example.com",
		Subject: "Your sign-in link", Text: "Hello,", HTML: `<!doctype html><html lang="en"><body>Hello,</body></html>`}); err != nil {
		t.Fatal(err)
	}
	run([]check{
		// t0 is 23 November.
		{"es", "es", "/inbox", []string{`<td lang="en"><a href="/inbox/1">Your sign-in link</a>`, " nov "}, []string{"Nov"}},
		{"", "en", "/inbox", []string{" Nov "}, nil},
		{"es", "es", "/inbox/1", []string{`<dt lang="en">Subject</dt><dd lang="en">Your sign-in link</dd>`, `<pre lang="en">Hello,`,
			`<dt lang="en">Reply-To</dt><dd>(ninguno)</dd>`}, nil},
	})
}
