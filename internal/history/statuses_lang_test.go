package history

import (
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/linkpipe/linkpipe/events"
	"github.com/linkpipe/linkpipe/internal/scope"
	"github.com/linkpipe/linkpipe/internal/suppress"
)

var update = flag.Bool("update", false, "rewrite testdata/statuses_en.golden")

// storyNow is when the verdicts of story are made.
var storyNow = time.Date(2026, 12, 1, 15, 4, 0, 0, time.UTC)

// story is a timeline, built by hand, with a link in every state support
// meets: used, expired (a sign-in and an appointment), superseded,
// revoked (with and without a reason), canceled, not yet valid, working,
// an email failed for now and for good, bounced with the address
// suppressed, a complaint, a lifted suppression, and a scope with no state.
func story() *Timeline {
	now := storyNow
	at := func(d time.Duration) time.Time { return now.Add(d) }
	ptr := func(t time.Time) *time.Time { return &t }
	tl := newTimeline()
	add := func(id, subject, purpose string, st *scope.State) {
		tl.Scopes[id] = subject
		tl.Issued[id] = events.LinkEvent{LinkID: id, Type: events.TypeIssued, Purpose: purpose, PracticeID: "demo"}
		if st != nil {
			tl.Current[subject] = *st
		}
		tl.Entries = append(tl.Entries, Entry{At: at(-time.Hour), LinkID: id, What: events.TypeIssued, Detail: purpose})
	}
	win := func(id, purpose string) scope.State {
		return scope.State{LinkID: id, Purpose: purpose, OneTime: purpose != events.PurposeTelehealth,
			ValidFrom: at(-time.Hour), ExpiresAt: at(23 * time.Hour)}
	}
	sub := func(s string) string { return scope.Prefix + "demo." + s }

	used := win("L-used", events.PurposeSignin)
	used.UsedAt = ptr(at(-30 * time.Minute))
	add("L-used", sub("c-1.signin"), events.PurposeSignin, &used)

	exp := win("L-exp", events.PurposeDocument)
	exp.ExpiresAt = at(-time.Minute)
	add("L-exp", sub("c-1.doc.s-1"), events.PurposeDocument, &exp)

	appt := win("L-appt", events.PurposeTelehealth)
	appt.ExpiresAt = at(-2 * time.Hour)
	add("L-appt", sub("c-1.appt.a-1"), events.PurposeTelehealth, &appt)

	cur := win("L-new", events.PurposeSignin)
	add("L-new", sub("c-2.signin"), events.PurposeSignin, &cur)
	add("L-old", sub("c-2.signin"), events.PurposeSignin, nil)
	tl.Issued["L-old"] = events.LinkEvent{LinkID: "L-old", Type: events.TypeIssued, Purpose: events.PurposeSignin,
		ValidFrom: ptr(at(-3 * time.Hour)), ExpiresAt: ptr(at(20 * time.Hour))}

	rev := win("L-rev", events.PurposeSignin)
	rev.RevokedAt, rev.RevokedReason = ptr(at(-time.Minute)), "lost phone"
	add("L-rev", sub("c-3.signin"), events.PurposeSignin, &rev)
	rev2 := win("L-rev2", events.PurposeDocument)
	rev2.RevokedAt = ptr(at(-time.Minute))
	add("L-rev2", sub("c-3.doc.s-2"), events.PurposeDocument, &rev2)

	canc := win("L-canc", events.PurposeTelehealth)
	canc.CanceledAt = ptr(at(-time.Minute))
	add("L-canc", sub("c-4.appt.a-2"), events.PurposeTelehealth, &canc)

	early := win("L-early", events.PurposeTelehealth)
	early.ValidFrom = at(26 * time.Hour)
	add("L-early", sub("c-4.appt.a-3"), events.PurposeTelehealth, &early)

	tmp := win("L-tmp", events.PurposeDocument)
	add("L-tmp", sub("c-5.doc.s-3"), events.PurposeDocument, &tmp)
	tl.Mail["L-tmp"] = events.LinkEvent{LinkID: "L-tmp", Type: events.TypeFailed, Reason: "throttled", At: at(-time.Minute)}
	tl.noteMail(ptr2(tl.Mail["L-tmp"]))

	perm := win("L-perm", events.PurposeSignin)
	add("L-perm", sub("c-6.signin"), events.PurposeSignin, &perm)
	tl.Mail["L-perm"] = events.LinkEvent{LinkID: "L-perm", Type: events.TypeFailed, Permanent: true,
		Reason: "suppressed: the address bounced permanently", At: at(-time.Minute)}
	tl.noteMail(ptr2(tl.Mail["L-perm"]))
	tl.deliveryOf("L-perm").entry = &suppress.Entry{Cause: suppress.CauseBounce, Detail: "NoEmail:550 5.1.1 user unknown", At: at(-time.Hour)}

	bnc := win("L-bnc", "")
	add("L-bnc", sub("c-7.x"), "", &bnc)
	tl.Mail["L-bnc"] = events.LinkEvent{LinkID: "L-bnc", Type: events.TypeSent, MessageID: "m-1", At: at(-2 * time.Minute)}
	tl.noteMail(&events.LinkEvent{LinkID: "L-bnc", Type: events.TypeBounced, Reason: "Permanent", Detail: "MailboxFull", At: at(-time.Minute)})
	tl.deliveryOf("L-bnc").entry = &suppress.Entry{Cause: suppress.CauseComplaint, At: at(-time.Minute)}

	for i, ev := range []events.LinkEvent{
		{Type: events.TypeComplained}, {Type: events.TypeDelivered}, {Type: events.TypeSent},
	} {
		id := []string{"L-spam", "L-dlv", "L-sent"}[i]
		w := win(id, events.PurposeDocument)
		add(id, sub("c-8.doc."+id), events.PurposeDocument, &w)
		ev.LinkID, ev.At = id, at(-time.Minute)
		tl.Mail[id] = events.LinkEvent{LinkID: id, Type: events.TypeSent, At: at(-2 * time.Minute)}
		tl.noteMail(&ev)
	}
	tl.deliveryOf("L-dlv").entry = &suppress.Entry{Cause: suppress.CauseBounce, Detail: "General", At: at(-3 * time.Hour),
		LiftedAt: ptr(at(-2 * time.Hour))}

	add("L-lost", sub("c-9.signin"), events.PurposeSignin, nil)
	tl.sort()
	return tl
}

func ptr2(ev events.LinkEvent) *events.LinkEvent { return &ev }

// TestStatusesInEnglishAreToday: the English of every verdict, what to do,
// mail and delivery is byte for byte what it was before the statuses
// could be put in Spanish (testdata/statuses_en.golden, written by the
// code before that change).
func TestStatusesInEnglishAreToday(t *testing.T) {
	got, err := json.MarshalIndent(story().Statuses(storyNow), "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join("testdata", "statuses_en.golden")
	if *update {
		if err := os.WriteFile(golden, append(got, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if string(want) != string(got)+"\n" {
		t.Errorf("the English statuses changed:\n%s", got)
	}
	if !strings.Contains(string(got), "Refused: it was already used on") {
		t.Error("the story lacks a used link")
	}
}

// TestStatusesInSpanish: every verdict of the story, what to do, the mail
// and the delivery in Spanish, dates with Spanish day and month names;
// ids, reason codes and commands as they are.
func TestStatusesInSpanish(t *testing.T) {
	es, ok := catalogue.Lang("es")
	if !ok {
		t.Fatal("no Spanish")
	}
	en := map[string]Status{}
	for _, s := range story().Statuses(storyNow) {
		en[s.LinkID] = s
	}
	want := map[string]string{
		"L-used":  "Rechazado: ya se usó el martes 1 de diciembre de 2026, 14:34 UTC; cada enlace de este tipo funciona una sola vez.",
		"L-exp":   "Rechazado: caducó el martes 1 de diciembre de 2026, 15:03 UTC.",
		"L-appt":  "Rechazado: el horario de la cita terminó el martes 1 de diciembre de 2026, 13:04 UTC.",
		"L-old":   "Rechazado: un enlace más reciente (L-new) reemplazó a este.",
		"L-new":   "Funciona: el cliente puede usarlo hasta el miércoles 2 de diciembre de 2026, 14:04 UTC.",
		"L-rev":   "Rechazado: el consultorio revocó los enlaces del cliente (lost phone).",
		"L-rev2":  "Rechazado: el consultorio revocó los enlaces del cliente (sin motivo indicado).",
		"L-canc":  "Rechazado: la cita se canceló.",
		"L-early": "Aún no es válido: funciona desde el miércoles 2 de diciembre de 2026, 17:04 UTC.",
		"L-tmp":   "Funciona; su correo falló por ahora y se reintentará (throttled).",
		"L-perm":  "Funciona, pero su correo no se envió: la dirección está bloqueada tras un rebote permanente o una queja por spam (la cronología tiene los detalles).",
		"L-lost":  "No hay estado registrado para su ámbito: linkpipe no puede saber si funciona.",
	}
	got := story().StatusesIn(storyNow, es)
	if len(got) != len(en) {
		t.Fatalf("%d statuses in Spanish, %d in English", len(got), len(en))
	}
	for _, s := range got {
		e := en[s.LinkID]
		if w, ok := want[s.LinkID]; ok && s.Verdict != w {
			t.Errorf("%s: verdict %q, want %q", s.LinkID, s.Verdict, w)
		}
		if s.Works != e.Works || s.Reason != e.Reason || s.Scope != e.Scope || len(s.Entries) != len(e.Entries) {
			t.Errorf("%s: the facts differ by language: %+v / %+v", s.LinkID, s, e)
		}
		for what, pair := range map[string][2]string{"verdict": {s.Verdict, e.Verdict}, "todo": {s.Todo, e.Todo},
			"mail": {s.Mail, e.Mail}, "delivery": {s.Delivery, e.Delivery}} {
			if pair[1] != "" && pair[0] == pair[1] {
				t.Errorf("%s: %s still in English: %q", s.LinkID, what, pair[0])
			}
		}
		for _, month := range []string{"Dec", "Tue", "Wed"} {
			if strings.Contains(s.Verdict+s.Todo+s.Delivery, month) {
				t.Errorf("%s: an English date in %q", s.LinkID, s.Verdict+s.Todo+s.Delivery)
			}
		}
	}
	by := map[string]Status{}
	for _, s := range got {
		by[s.LinkID] = s
	}
	for id, wants := range map[string][]string{
		"L-used": {"Reenviar: envíe al cliente un nuevo enlace de inicio de sesión"},
		"L-perm": {"La dirección está bloqueada (rebote permanente (el buzón no existe))",
			"`linkpipe publish unsuppress --practice demo --email <la dirección del cliente>`", "actions.address.unsuppressed"},
		"L-bnc":  {"el último correo rebotó (buzón lleno) el martes 1 de diciembre de 2026, 15:03 UTC", "dirección bloqueada desde el"},
		"L-dlv":  {"último correo entregado el", "se desbloqueó el martes 1 de diciembre de 2026, 13:04 UTC"},
		"L-sent": {"aún sin informe de entrega"},
		"L-spam": {"el cliente marcó el último correo como spam el"},
		"L-tmp":  {"falló"},
	} {
		s := by[id]
		for _, w := range wants {
			if !strings.Contains(s.Todo+"|"+s.Delivery+"|"+s.Mail, w) {
				t.Errorf("%s lacks %q: todo %q; delivery %q; mail %q", id, w, s.Todo, s.Delivery, s.Mail)
			}
		}
	}
	if by["L-perm"].Mail != "falló definitivamente" || by["L-sent"].Mail != "enviado" {
		t.Errorf("mail: %q, %q", by["L-perm"].Mail, by["L-sent"].Mail)
	}
	if s := story().StatusesIn(storyNow, nil); s[0].Verdict != story().Statuses(storyNow)[0].Verdict {
		t.Errorf("nil language is not English: %q", s[0].Verdict)
	}
}
