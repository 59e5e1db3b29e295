package support_test

import (
	"context"
	"encoding/json"
	"html"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/linkpipe/linkpipe/internal/clock"
	"github.com/linkpipe/linkpipe/internal/devstack"
	"github.com/linkpipe/linkpipe/internal/history"
	"github.com/linkpipe/linkpipe/internal/support"
)

// markedEnglish matches the parts of a page that stay English (the
// ledger's reason codes, timeline types and details), marked lang="en".
var markedEnglish = regexp.MustCompile(`(?s)<(code|td) lang="en">.*?</(code|td)>`)

// pageWords are words of the page itself (not of the ledger) in English:
// none may be left on a page in another language.
var pageWords = []string{"Why can", "Each link of a client", "By client", "Practice id", "Client id",
	"By link", "Link id", ">Explain<", "links found", "link found", "Verdicts as of", "As JSON", "No links on record",
	"Works", "Refused", "Sign-in link", "Document link", "Video appointment link", "What to do:", "Scope<", "Reason code",
	">Email<", "Delivery<", "none recorded yet", "History of", ">When<", ">What<", ">Detail<", "Read from the ledger",
	"Resend", "Nothing to do", "Ask the client", "Check the client's address", "Give both", "No link", "sent<"}

// TestSupportViewInSpanish: a browser asking for Spanish gets the whole
// page in Spanish (its words, the verdicts and what to do, the errors),
// says so (<html lang>, Content-Language) and varies on Accept-Language;
// the ledger's own English words are marked lang="en".
func TestSupportViewInSpanish(t *testing.T) {
	f := startStory(t)
	const es = "es-ES,es;q=0.9,en;q=0.5"
	for _, tc := range []struct {
		name, query string
		status      int
		want        []string
	}{
		{"by client", "?practice=demo&client=c-9", http.StatusOK, []string{
			"¿Por qué mi cliente no puede entrar?", "Soporte: ¿por qué mi cliente no puede entrar? · linkpipe",
			"Por cliente", "Id del consultorio", "Id del cliente", "Por enlace", "Id del enlace", ">Explicar<",
			"Se encontraron 4 enlaces.", "Veredictos a fecha de ", "En JSON",
			"Funciona", "Rechazado", "Enlace de inicio de sesión", "Enlace de documento", "Enlace de cita por video",
			"Qué hacer:", "Ámbito", "Código del motivo", "Correo", "enviado", "Historial de", "Cuándo", "Detalle",
			"Rechazado: la cita se canceló.", "Pida al cliente que use el correo más reciente",
			"Nada que reenviar: la cita se canceló.", "como hace <code>linkpipe explain</code>"}},
		{"a refused address", "?practice=demo&client=c-10", http.StatusOK, []string{
			"Se encontró 1 enlace.", "falló definitivamente", "Compruebe la dirección del cliente", "Entrega", "último correo no enviado"}},
		{"the empty form", "", http.StatusOK, []string{"Por cliente", "Explicar"}},
		{"no links", "?practice=demo&client=nobody-at-all", http.StatusOK, []string{"No hay enlaces registrados.", "Se encontraron 0 enlaces."}},
		{"half a client", "?practice=demo", http.StatusBadRequest, []string{"Indique tanto un id de consultorio como un id de cliente"}},
		{"both", "?practice=demo&client=c-9&link=L1", http.StatusBadRequest, []string{"no ambos"}},
		{"a bad id", "?link=a%20b", http.StatusBadRequest, []string{"Los id tienen de 1 a 64 letras"}},
		{"an unknown link", "?link=Lnever", http.StatusNotFound, []string{"Nunca se emitió ningún enlace Lnever."}},
	} {
		code, hdr, body := fetch(t, f.st.URL+support.Path+tc.query, es, "")
		page := html.UnescapeString(body)
		if code != tc.status || hdr.Get("Content-Language") != "es" || !strings.Contains(hdr.Get("Vary"), "Accept-Language") ||
			!strings.Contains(page, `<html lang="es">`) {
			t.Errorf("%s: %d, Content-Language %q, Vary %q, lang es: %v", tc.name, code, hdr.Get("Content-Language"), hdr.Get("Vary"),
				strings.Contains(page, `<html lang="es">`))
		}
		for _, w := range tc.want {
			if !strings.Contains(page, w) {
				t.Errorf("%s: the page lacks %q", tc.name, w)
			}
		}
		own := markedEnglish.ReplaceAllString(page, "")
		for _, w := range pageWords {
			if strings.Contains(own, w) {
				t.Errorf("%s: English %q left on the Spanish page", tc.name, w)
			}
		}
	}
	// The ledger's words stay English, and say so.
	_, _, body := fetch(t, f.st.URL+support.Path+"?practice=demo&client=c-9", es, "")
	if !strings.Contains(body, `<code lang="en">superseded</code>`) || !strings.Contains(body, `<code lang="en">issued</code>`) {
		t.Errorf("reason codes and timeline types not marked English:\n%s", body)
	}
}

// TestSupportViewInEnglish: without Accept-Language, or asking for a
// language linkpipe does not speak, or English, the page is in English
// and says so.
func TestSupportViewInEnglish(t *testing.T) {
	st, err := devstack.Start(context.Background(), devstack.Config{DataDir: t.TempDir(), HTTPAddr: "127.0.0.1:0", NATSPort: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	for _, accept := range []string{"", "fr-FR,fr;q=0.9", "en-US,en;q=0.9,es;q=0.5"} {
		code, hdr, body := fetch(t, st.URL+support.Path+"?link=Lnever", accept, "")
		page := html.UnescapeString(body)
		if code != http.StatusNotFound || hdr.Get("Content-Language") != "en" || !strings.Contains(hdr.Get("Vary"), "Accept-Language") ||
			!strings.Contains(page, `<html lang="en">`) {
			t.Errorf("%q: %d, Content-Language %q, Vary %q", accept, code, hdr.Get("Content-Language"), hdr.Get("Vary"))
		}
		for _, w := range []string{"Why can't my client get in?", "By client", "Practice id", ">Explain<", "No link Lnever was ever issued."} {
			if !strings.Contains(page, w) {
				t.Errorf("%q: the page lacks %q", accept, w)
			}
		}
		if strings.Contains(page, "Por cliente") || strings.Contains(page, "Explicar") {
			t.Errorf("%q: Spanish on the English page", accept)
		}
	}
}

// TestSupportJSONIsEnglish: the JSON is explain's, in English whatever the
// browser asks for: the same bytes with and without Accept-Language, its
// links history's English Statuses, its errors English.
func TestSupportJSONIsEnglish(t *testing.T) {
	f := startStory(t)
	now := time.Now().Truncate(time.Second)
	srv := httptest.NewServer(support.Handler(f.st.JetStream(), clock.NewFake(now), nil))
	t.Cleanup(srv.Close)

	for _, q := range []string{"?practice=demo&client=c-9", "?practice=demo&client=c-10", "?practice=demo", "?link=Lnever", "?link=a%20b"} {
		code, hdr, english := fetch(t, srv.URL+support.Path+".json"+q, "", "")
		if hdr.Get("Content-Type") != "application/json" || hdr.Get("Content-Language") != "" {
			t.Errorf("%s: Content-Type %q, Content-Language %q", q, hdr.Get("Content-Type"), hdr.Get("Content-Language"))
		}
		for _, accept := range []string{"es", "es-MX,es;q=0.9", "fr"} {
			if c, _, body := fetch(t, srv.URL+support.Path+".json"+q, accept, ""); c != code || body != english {
				t.Errorf("%s, Accept-Language %s: %d, want %d; the JSON differs:\n%s\nwant:\n%s", q, accept, c, code, body, english)
			}
		}
	}

	var a support.Answer
	_, _, body := fetch(t, srv.URL+support.Path+".json?practice=demo&client=c-9", "es", "")
	if err := json.Unmarshal([]byte(body), &a); err != nil {
		t.Fatal(err)
	}
	tl, err := history.Client(context.Background(), f.st.JetStream(), devstack.DemoPractice, "c-9")
	if err != nil {
		t.Fatal(err)
	}
	got, _ := json.Marshal(a.Links)
	want, _ := json.Marshal(tl.Statuses(now))
	if string(got) != string(want) || len(a.Links) != 4 {
		t.Errorf("the JSON's links are not history's English Statuses:\n%s\nwant:\n%s", got, want)
	}
	for q, want := range map[string]string{
		"?practice=demo":                 "Give both a practice id and a client id (or a link id).",
		"?practice=demo&client=c&link=L": "Give a practice and a client, or a link id, not both.",
		"?link=a%20b":                    "Ids are 1 to 64 letters, digits, '_' or '-'.",
		"?link=Lnever":                   "No link Lnever was ever issued.",
	} {
		var e support.Answer
		_, _, body := fetch(t, srv.URL+support.Path+".json"+q, "es", "")
		if err := json.Unmarshal([]byte(body), &e); err != nil || e.Error != want {
			t.Errorf("%s: error %q (%v), want %q", q, e.Error, err, want)
		}
	}
}
