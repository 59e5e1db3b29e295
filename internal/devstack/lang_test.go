package devstack_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/linkpipe/linkpipe/events"
	"github.com/linkpipe/linkpipe/internal/devstack"
	"github.com/linkpipe/linkpipe/internal/eventually"
	"github.com/linkpipe/linkpipe/internal/mailer"
)

// get fetches u with an Accept-Language ("" sends none).
func get(t *testing.T, u, accept string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	if accept != "" {
		req.Header.Set("Accept-Language", accept)
	}
	resp, err := noRedirect().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// TestDevPagesLanguage: /dev, a run's page and its live part, an unknown
// run and the demo portal (with a verified ticket and without one) speak the
// browser's Accept-Language, English when it asks for none or for a
// language linkpipe does not speak; they say so in <html lang> and
// Content-Language and vary on Accept-Language. The scenario texts are
// translated too, with their NATS subjects marked as English. A run's JSON
// stays English, the same whatever the browser asks for.
func TestDevPagesLanguage(t *testing.T) {
	st, err := devstack.Start(context.Background(), devstack.Config{DataDir: t.TempDir(), HTTPAddr: "127.0.0.1:0", NATSPort: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })

	// A run with its email in, and a redemption's landing on the portal.
	p := panel{t, st}
	id := p.start("in-person")
	p.until(id, "the confirmation", func(r runJSON) bool { return kinds(r) == "appointment_confirmed" })
	// A run with a link, for the ledger's verdict in the page's language.
	signin := p.start("signin")
	p.until(signin, "the sign-in link", func(r runJSON) bool { return verdicts(r) == "signin:works" })
	if _, err := events.Publish(context.Background(), st.JetStream(), &events.SigninRequested{
		Envelope: events.Envelope{EventID: "lang-1", PracticeID: devstack.DemoPractice},
		Client:   events.Client{ID: "client-lang", Email: "lang@example.com", Name: "Pat Example"},
		ReturnTo: "/messages",
	}); err != nil {
		t.Fatal(err)
	}
	var inbox []mailer.SinkMessage
	eventually.True(t, 20*time.Second, func() bool {
		_, body := get(t, st.URL+"/inbox.json?to=lang@example.com", "")
		return json.Unmarshal([]byte(body), &inbox) == nil && len(inbox) == 1 && len(inbox[0].Links) == 1
	}, "the sign-in email in the inbox")
	resp, _ := do(t, noRedirect(), "POST", inbox[0].Links[0])
	portal := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusSeeOther || portal == "" {
		t.Fatalf("confirming: %d %q", resp.StatusCode, portal)
	}

	for _, tc := range []struct {
		page, path, accept, lang string
		status                   int
		want, notWant            []string
	}{
		{"dev", "/dev", "es-ES,es;q=0.9", "es", 200,
			[]string{"linkpipe — modo de desarrollo", "Escenarios", "Enviar un enlace de inicio de sesión", "Id del cliente",
				"Cita presencial", "Ejecuciones recientes", "pasos hechos: 1 de 1", `(<code lang="en">actions.renewal.requested</code>)`,
				"vista de soporte"},
			[]string{"In-person appointment", "Recent runs", "Send a sign-in link"}},
		{"dev", "/dev", "", "en", 200,
			[]string{"linkpipe — dev mode", "Scenarios", "Send a sign-in link", "In-person appointment", "steps done: 1 of 1"},
			[]string{"Escenarios", "Cita presencial"}},
		{"dev", "/dev", "fr-FR,fr;q=0.9", "en", 200, []string{"In-person appointment"}, nil},
		{"dev with an error", "/dev?error=client.email%3A+not+an+address", "es", "es", 200,
			[]string{`No se publicó nada: <span lang="en">client.email: not an address</span>`}, nil},
		{"run", "/dev/runs/" + id, "es", "es", 200,
			[]string{"<title>Cita presencial · linkpipe dev</title>", "Programar una cita presencial", "Hecho:", "Pasos",
				"Volver a la página de desarrollo", "del consultorio", "Vista de soporte", "En JSON",
				"Correos", "Tipo", "Asunto", `<code class="token" lang="en">appointment_<wbr>confirmed</code>`, `<td lang="en"><a href="/inbox/`,
				"Aún no hay enlaces.", "Actualizado a las"},
			[]string{"Schedule an in-person appointment", "Back to the dev page", "No link yet"}},
		{"run", "/dev/runs/" + id, "", "en", 200,
			[]string{"<title>In-person appointment · linkpipe dev</title>", "Schedule an in-person appointment", "Done:", "No link yet."},
			[]string{"Pasos"}},
		{"run with a link", "/dev/runs/" + signin, "es", "es", 200,
			[]string{"Funciona: el cliente puede usarlo hasta el", "<strong>Qué hacer:</strong> Nada que hacer."},
			[]string{"Works: the client", "Nothing to do.", `<p lang="en">`}},
		{"run with a link", "/dev/runs/" + signin, "", "en", 200,
			[]string{"Works: the client can use it until", "<strong>What to do:</strong> Nothing to do."},
			[]string{"Funciona"}},
		{"run's live part", "/dev/runs/" + id + "?part=live", "es", "es", 200,
			[]string{"<h2>Correos</h2>", "Los correos de la ejecución", "Aún no hay enlaces."}, []string{"<html", "Emails"}},
		{"unknown run", "/dev/runs/run-nope", "es", "es", 404,
			[]string{"No existe esa ejecución", "<code>run-nope</code>"}, nil},
		{"portal", strings.TrimPrefix(portal, st.URL), "es", "es", 200,
			[]string{"Portal de clientes de demostración", "Ticket verificado con /.well-known/jwks.json",
				"una sesión para <strong>client-lang</strong> que caduca tras 15 minutos de inactividad", `<pre id="claims" lang="en">`},
			[]string{"Ticket verified"}},
		{"portal", strings.TrimPrefix(portal, st.URL), "", "en", 200,
			[]string{"Ticket verified against /.well-known/jwks.json", "that idles out after 15 minutes."}, nil},
		{"portal without a ticket", "/portal/messages", "es", "es", 200,
			[]string{"No hay un ticket válido: esta página se abrió sin <code>?ticket=</code>"}, nil},
		{"portal with a bad ticket", "/portal/messages?ticket=nonsense", "es", "es", 200,
			[]string{`No hay un ticket válido: <span lang="en">`}, nil},
	} {
		resp, body := get(t, st.URL+tc.path, tc.accept)
		where := tc.page + " (" + tc.accept + ")"
		if resp.StatusCode != tc.status || resp.Header.Get("Content-Language") != tc.lang || resp.Header.Get("Vary") != "Accept-Language" {
			t.Errorf("%s: %d, Content-Language %q, Vary %q; want %d, %s, Accept-Language", where, resp.StatusCode,
				resp.Header.Get("Content-Language"), resp.Header.Get("Vary"), tc.status, tc.lang)
		}
		if !strings.Contains(tc.path, "part=live") && !strings.Contains(body, `<html lang="`+tc.lang+`">`) {
			t.Errorf("%s: no <html lang=%q>", where, tc.lang)
		}
		for _, w := range tc.want {
			if !strings.Contains(body, w) {
				t.Errorf("%s: no %q in:\n%s", where, w, body)
			}
		}
		for _, w := range tc.notWant {
			if strings.Contains(body, w) {
				t.Errorf("%s: %q (untranslated?) in:\n%s", where, w, body)
			}
		}
	}

	// The run's JSON: English, and the same whatever the browser speaks.
	decode := func(accept string) map[string]any {
		resp, body := get(t, st.URL+"/dev/runs/"+id+".json", accept)
		var m map[string]any
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" || json.Unmarshal([]byte(body), &m) != nil {
			t.Fatalf("JSON (%q): %d %s %s", accept, resp.StatusCode, resp.Header.Get("Content-Type"), body)
		}
		if cl := resp.Header.Get("Content-Language"); cl != "" {
			t.Errorf("JSON (%q): Content-Language %q", accept, cl)
		}
		delete(m, "at") // the time it was read
		return m
	}
	en, es := decode(""), decode("es")
	if !reflect.DeepEqual(en, es) {
		t.Errorf("the JSON depends on Accept-Language:\n%v\n%v", en, es)
	}
	steps, _ := es["steps"].([]any)
	if es["title"] != "In-person appointment" ||
		es["about"] != "An in-person appointment's confirmation carries no link: there is nothing to join." ||
		len(steps) != 1 || !reflect.DeepEqual(steps[0], map[string]any{"label": "Schedule an in-person appointment",
		"about": "actions.appointment.scheduled, telehealth false", "done": true}) {
		t.Errorf("JSON asked in Spanish is not English: %v", es)
	}
	if resp, _ := get(t, st.URL+"/dev/runs/run-nope.json", "es"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("unknown run's JSON: %d", resp.StatusCode)
	}
}
