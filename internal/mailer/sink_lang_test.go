package mailer_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestInboxLanguage: the inbox pages speak the browser's Accept-Language
// (Spanish or English), say so in <html lang> and Content-Language, and
// vary on it.
func TestInboxLanguage(t *testing.T) {
	srv := httptest.NewServer(newSink(t).Handler("/inbox"))
	defer srv.Close()
	for _, tc := range []struct{ accept, lang, path, want string }{
		{"", "en", "/inbox", "No email yet"},
		{"es-ES,es;q=0.9", "es", "/inbox", "Aún no hay correos"},
		{"", "en", "/inbox/9", "There is no email with that id"},
		{"es", "es", "/inbox/9", "No hay ningún correo con ese id"},
	} {
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
			!strings.Contains(body, `<html lang="`+tc.lang+`">`) || !strings.Contains(body, tc.want) {
			t.Errorf("%s (%q): Content-Language %q, Vary %q, want %s and %q in:\n%.600s", tc.path, tc.accept,
				resp.Header.Get("Content-Language"), resp.Header.Get("Vary"), tc.lang, tc.want, body)
		}
	}
}
