package devstack

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/linkpipe/linkpipe/events"
	"github.com/linkpipe/linkpipe/internal/locale"
	"github.com/linkpipe/linkpipe/internal/practice"
)

// SpanishPractice is the branded, Spanish-speaking practice the "practice
// settings" scenario sets up beside the demo practice.
const SpanishPractice = "clinica-sol"

// maxRuns bounds the scenario runs kept in memory (the oldest goes).
const maxRuns = 100

// A scenario is a story the /dev page tells with real actions: each step
// is a button that publishes one or more actions to ACTIONS, as a practice
// system would; its run page shows the emails as they arrive and the
// timeline of the links involved. The first step runs when the scenario
// starts; the others wait for their button, so a step can be taken when
// its effect (an expired link, a reminder) has been looked at.
type scenario struct {
	Name  string
	Title text
	// About says what the scenario shows, and what to look at.
	About text
	Steps []step
}

// A step publishes actions for a run.
type step struct {
	Label text // the button
	About text // what it does, and what to expect
	run   func(d *devPages, ctx context.Context, r *run) error
}

// A text is a sentence of the panel in a language: a closure holding its
// l.T("...") call (the catalogue's test reads the keys from the source).
// The run's JSON says it in English.
type text func(l *locale.Lang) string

// same is a text that reads the same in every language (a NATS subject
// with its fields).
func same(s string) text { return func(*locale.Lang) string { return s } }

// scenarios is every scenario of the panel: every action kind a practice
// system publishes (renewal requests come from a refusal page's button),
// with the clock shortcuts where time matters.
func scenarios() []*scenario {
	return []*scenario{
		{Name: "signin",
			Title: func(l *locale.Lang) string { return l.T("Sign-in link, then a newer one") },
			About: func(l *locale.Lang) string {
				return l.T("A sign-in link works once, for 24 hours. Asking for another supersedes the first: open the first email's link after step 2 and the page says there is a newer link, with a button that emails one (actions.renewal.requested).")
			},
			Steps: []step{
				{Label: func(l *locale.Lang) string { return l.T("Send a sign-in link") }, About: same("actions.signin.requested"), run: (*devPages).signin},
				{Label: func(l *locale.Lang) string { return l.T("Send another sign-in link") },
					About: func(l *locale.Lang) string {
						return l.T("actions.signin.requested again: the first link is superseded")
					},
					run: (*devPages).signin},
			}},
		{Name: "document",
			Title: func(l *locale.Lang) string { return l.T("A document link survives a sign-in") },
			About: func(l *locale.Lang) string {
				return l.T("A document link lasts 72 hours and is its own scope: signing in afterwards does not turn it off (it once did). Both links work after step 2.")
			},
			Steps: []step{
				{Label: func(l *locale.Lang) string { return l.T("Share a document") }, About: same("actions.document.shared"), run: (*devPages).shareDocument},
				{Label: func(l *locale.Lang) string { return l.T("Now send a sign-in link") },
					About: func(l *locale.Lang) string { return l.T("actions.signin.requested: the document link keeps working") },
					run:   (*devPages).signin},
			}},
		{Name: "reminders",
			Title: func(l *locale.Lang) string { return l.T("Video appointment in 5 minutes, reminders a minute apart") },
			About: func(l *locale.Lang) string {
				return l.T("A video appointment starting in 5 minutes with reminders 4, 3 and 2 minutes before it: the confirmation arrives now and a reminder each minute after, all with the same link, which can be opened again and again until 30 minutes after the end (re-joining a dropped call).")
			},
			Steps: []step{
				{Label: func(l *locale.Lang) string { return l.T("Schedule the appointment") },
					About: func(l *locale.Lang) string { return l.T("actions.appointment.scheduled with reminders [4m, 3m, 2m]") },
					run:   (*devPages).scheduleSoon},
			}},
		{Name: "reschedule",
			Title: func(l *locale.Lang) string { return l.T("A reschedule revives an expired video link") },
			About: func(l *locale.Lang) string {
				return l.T("An appointment that ended two hours ago has an expired link. Rescheduling it to start in 10 minutes makes the same link work again, and the email says so.")
			},
			Steps: []step{
				{Label: func(l *locale.Lang) string { return l.T("Schedule an appointment that is over") },
					About: func(l *locale.Lang) string {
						return l.T("actions.appointment.scheduled, 3 hours ago: the link is expired")
					},
					run: (*devPages).schedulePast},
				{Label: func(l *locale.Lang) string { return l.T("Reschedule it to start in 10 minutes") },
					About: func(l *locale.Lang) string { return l.T("actions.appointment.rescheduled: the same link works again") },
					run:   (*devPages).rescheduleSoon},
			}},
		{Name: "cancel",
			Title: func(l *locale.Lang) string { return l.T("Cancel an appointment") },
			About: func(l *locale.Lang) string {
				return l.T("A canceled appointment's link stops working at once and its reminders are dropped; the client gets a cancellation email without a link.")
			},
			Steps: []step{
				{Label: func(l *locale.Lang) string { return l.T("Schedule a video appointment tomorrow") }, About: same("actions.appointment.scheduled"), run: (*devPages).scheduleTomorrow},
				{Label: func(l *locale.Lang) string { return l.T("Cancel it") },
					About: func(l *locale.Lang) string {
						return l.T("actions.appointment.canceled: the link is refused as canceled")
					},
					run: (*devPages).cancel},
			}},
		{Name: "in-person",
			Title: func(l *locale.Lang) string { return l.T("In-person appointment") },
			About: func(l *locale.Lang) string {
				return l.T("An in-person appointment's confirmation carries no link: there is nothing to join.")
			},
			Steps: []step{
				{Label: func(l *locale.Lang) string { return l.T("Schedule an in-person appointment") }, About: same("actions.appointment.scheduled, telehealth false"), run: (*devPages).scheduleInPerson},
			}},
		{Name: "revoke",
			Title: func(l *locale.Lang) string { return l.T("Turn off every link of a client") },
			About: func(l *locale.Lang) string {
				return l.T("A lost phone: the practice turns off all of a client's links at once. Both links are refused as revoked after step 2; a new sign-in afterwards works.")
			},
			Steps: []step{
				{Label: func(l *locale.Lang) string { return l.T("Send a sign-in link and share a document") },
					About: func(l *locale.Lang) string { return l.T("actions.signin.requested and actions.document.shared") },
					run:   (*devPages).signinAndDocument},
				{Label: func(l *locale.Lang) string { return l.T("Turn off all their links") }, About: same("actions.client.links_revoked"), run: (*devPages).revoke},
				{Label: func(l *locale.Lang) string { return l.T("Send a new sign-in link") },
					About: func(l *locale.Lang) string { return l.T("actions.signin.requested: works again") },
					run:   (*devPages).signin},
			}},
		{Name: "bounce",
			Title: func(l *locale.Lang) string { return l.T("An address that bounces, then is lifted") },
			About: func(l *locale.Lang) string {
				return l.T("When the email provider reports that an address bounced for good (SES tells the mailer through SNS and SQS; here the panel puts that event on a local queue), linkpipe stops emailing the address: the next link is not sent, and the support view says to check the address. Once it is fixed, actions.address.unsuppressed lifts the suppression.")
			},
			Steps: []step{
				{Label: func(l *locale.Lang) string { return l.T("Send a sign-in link") }, About: same("actions.signin.requested"), run: (*devPages).signin},
				{Label: func(l *locale.Lang) string { return l.T("Report a permanent bounce") },
					About: func(l *locale.Lang) string {
						return l.T("an SES Bounce event for that email: the link's email is marked bounced and the address suppressed")
					},
					run: (*devPages).bounce},
				{Label: func(l *locale.Lang) string { return l.T("Send another sign-in link") },
					About: func(l *locale.Lang) string {
						return l.T("actions.signin.requested: no email, the address is suppressed")
					},
					run: (*devPages).signin},
				{Label: func(l *locale.Lang) string { return l.T("Lift the suppression") }, About: same("actions.address.unsuppressed"), run: (*devPages).unsuppress},
				{Label: func(l *locale.Lang) string { return l.T("Send a sign-in link again") },
					About: func(l *locale.Lang) string { return l.T("actions.signin.requested: the email arrives") },
					run:   (*devPages).signin},
			}},
		{Name: "practice",
			Title: func(l *locale.Lang) string { return l.T("A practice's settings: Spanish, its time zone and colour") },
			About: func(l *locale.Lang) string {
				return l.T("Clínica Sol speaks Spanish, is in Madrid and has its own accent colour: its emails and pages follow (the expiry time is Madrid's). A client who reads English gets English whatever the practice's language.")
			},
			Steps: []step{
				{Label: func(l *locale.Lang) string { return l.T("Set up Clínica Sol") }, About: same("actions.practice.updated: locale es, timezone Europe/Madrid, accent_color"), run: (*devPages).setUpSol},
				{Label: func(l *locale.Lang) string { return l.T("Send a sign-in link") },
					About: func(l *locale.Lang) string {
						return l.T("actions.signin.requested for a client with no language: Spanish")
					},
					run: (*devPages).solSignin},
				{Label: func(l *locale.Lang) string { return l.T("Send another, now that the client reads English") }, About: func(l *locale.Lang) string { return l.T("actions.signin.requested with client.locale en") }, run: (*devPages).solSigninEnglish},
			}},
	}
}

// run is one playing of a scenario, for its own client (a fresh id and
// address each time, so runs never mix).
type run struct {
	ID       string
	Scenario *scenario
	Practice string
	Client   string
	Email    string
	Started  time.Time
	// Done is how many steps have run; Errors what a step could not do.
	Done   int
	Errors []stepError
	// published counts the actions published, for their event ids.
	published int
}

// runs keeps the scenario runs of this process.
type runs struct {
	mu   sync.Mutex
	byID map[string]*run
}

func (rs *runs) add(r *run) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if rs.byID == nil {
		rs.byID = map[string]*run{}
	}
	if len(rs.byID) >= maxRuns {
		var oldest *run
		for _, o := range rs.byID {
			if oldest == nil || o.Started.Before(oldest.Started) {
				oldest = o
			}
		}
		delete(rs.byID, oldest.ID)
	}
	rs.byID[r.ID] = r
}

// get returns a copy of a run (nil if none), safe to render.
func (rs *runs) get(id string) *run {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	r, ok := rs.byID[id]
	if !ok {
		return nil
	}
	c := *r
	c.Errors = append([]stepError(nil), r.Errors...)
	return &c
}

// list returns copies of the runs, newest first.
func (rs *runs) list() []*run {
	rs.mu.Lock()
	out := make([]*run, 0, len(rs.byID))
	for _, r := range rs.byID {
		c := *r
		out = append(out, &c)
	}
	rs.mu.Unlock()
	sort.Slice(out, func(a, b int) bool { return out[a].Started.After(out[b].Started) })
	return out
}

// stepError is what step Step of a run could not do.
type stepError struct {
	Step int
	Err  error
}

// errStepOrder: a step button was pressed out of order (a stale page, a
// double submit).
var errStepOrder = errors.New("that step is not the next one")

// step runs step n of run id, if it is the next one.
func (rs *runs) step(ctx context.Context, d *devPages, id string, n int) error {
	rs.mu.Lock()
	defer rs.mu.Unlock() // steps of all runs in turn: they are a few publishes
	r, ok := rs.byID[id]
	if !ok {
		return fmt.Errorf("no run %s", id)
	}
	if n != r.Done || n >= len(r.Scenario.Steps) {
		return errStepOrder
	}
	if err := r.Scenario.Steps[n].run(d, ctx, r); err != nil {
		r.Errors = append(r.Errors, stepError{Step: n, Err: err})
		return err
	}
	r.Done++
	return nil
}

func newRun(sc *scenario, now time.Time) *run {
	b := make([]byte, 4)
	rand.Read(b)
	suffix := hex.EncodeToString(b)
	client := sc.Name + "-" + suffix
	p := DemoPractice
	if sc.Name == "practice" {
		p = SpanishPractice
	}
	return &run{ID: "run-" + suffix, Scenario: sc, Practice: p, Client: client, Email: client + "@example.com", Started: now}
}

// envelope is the next action's envelope of the run.
func (r *run) envelope() events.Envelope {
	r.published++
	return events.Envelope{EventID: r.ID + "-" + strconv.Itoa(r.published), PracticeID: r.Practice}
}

func (r *run) client() events.Client {
	return events.Client{ID: r.Client, Email: r.Email, Name: "Pat Example"}
}

// appointmentID is the run's one appointment.
func (r *run) appointmentID() string { return "appt-" + r.ID }

func (d *devPages) publish(ctx context.Context, a events.Action) error {
	_, err := events.Publish(ctx, d.js, a)
	return err
}

func (d *devPages) signin(ctx context.Context, r *run) error {
	return d.publish(ctx, &events.SigninRequested{Envelope: r.envelope(), Client: r.client(), ReturnTo: "/messages"})
}

func (d *devPages) unsuppress(ctx context.Context, r *run) error {
	return d.publish(ctx, &events.AddressUnsuppressed{Envelope: r.envelope(), Email: r.Email})
}

func (d *devPages) shareDocument(ctx context.Context, r *run) error {
	return d.publish(ctx, &events.DocumentShared{Envelope: r.envelope(), Client: r.client(),
		Document: events.Document{ID: "doc-" + r.ID, Title: "Intake form"}, ShareID: "share-" + r.ID})
}

func (d *devPages) signinAndDocument(ctx context.Context, r *run) error {
	if err := d.signin(ctx, r); err != nil {
		return err
	}
	return d.shareDocument(ctx, r)
}

func (d *devPages) schedule(ctx context.Context, r *run, starts time.Time, telehealth bool, reminders []string) error {
	starts = starts.UTC().Truncate(time.Minute)
	ends := starts.Add(50 * time.Minute)
	return d.publish(ctx, &events.AppointmentScheduled{Envelope: r.envelope(), Client: r.client(),
		Appointment: events.Appointment{ID: r.appointmentID(), StartsAt: &starts, EndsAt: &ends, Telehealth: telehealth,
			ClinicianName: "Dr. Rivera", Timezone: "America/Chicago"},
		Reminders: reminders})
}

func (d *devPages) scheduleSoon(ctx context.Context, r *run) error {
	// Not truncated to the minute: the reminders are due 1, 2 and 3
	// minutes from now.
	starts := d.clock.Now().UTC().Add(5 * time.Minute)
	ends := starts.Add(50 * time.Minute)
	return d.publish(ctx, &events.AppointmentScheduled{Envelope: r.envelope(), Client: r.client(),
		Appointment: events.Appointment{ID: r.appointmentID(), StartsAt: &starts, EndsAt: &ends, Telehealth: true,
			ClinicianName: "Dr. Rivera", Timezone: "America/Chicago"},
		Reminders: []string{"4m", "3m", "2m"}})
}

func (d *devPages) schedulePast(ctx context.Context, r *run) error {
	return d.schedule(ctx, r, d.clock.Now().Add(-3*time.Hour), true, []string{})
}

func (d *devPages) scheduleTomorrow(ctx context.Context, r *run) error {
	return d.schedule(ctx, r, d.clock.Now().Add(24*time.Hour), true, []string{})
}

func (d *devPages) scheduleInPerson(ctx context.Context, r *run) error {
	return d.schedule(ctx, r, d.clock.Now().Add(48*time.Hour), false, []string{})
}

func (d *devPages) rescheduleSoon(ctx context.Context, r *run) error {
	starts := d.clock.Now().UTC().Add(10 * time.Minute).Truncate(time.Minute)
	ends := starts.Add(50 * time.Minute)
	return d.publish(ctx, &events.AppointmentRescheduled{Envelope: r.envelope(),
		Appointment: events.Appointment{ID: r.appointmentID(), StartsAt: &starts, EndsAt: &ends}})
}

func (d *devPages) cancel(ctx context.Context, r *run) error {
	return d.publish(ctx, &events.AppointmentCanceled{Envelope: r.envelope(), Appointment: events.Appointment{ID: r.appointmentID()}})
}

func (d *devPages) revoke(ctx context.Context, r *run) error {
	return d.publish(ctx, &events.ClientLinksRevoked{Envelope: r.envelope(), Client: events.Client{ID: r.Client}, Reason: "lost phone"})
}

func (d *devPages) setUpSol(ctx context.Context, r *run) error {
	return d.publish(ctx, &events.PracticeUpdated{Envelope: r.envelope(),
		Practice: events.Practice{Name: "Clínica Sol", ReplyTo: "recepcion@sol.example", PortalURL: d.base + "/portal",
			Timezone: "Europe/Madrid", Locale: "es", AccentColor: "#b45309"}})
}

// solNotReady says Clínica Sol's settings are not in the practice
// directory yet (the run's page says it in the page's language).
const solNotReady = "Clínica Sol's settings have not arrived yet; try again in a moment"

var errSolNotReady = errors.New(solNotReady)

// solReady waits (briefly) for Clínica Sol's settings to reach the
// practice directory, so the next email is rendered with them.
func (d *devPages) solReady(ctx context.Context) error {
	if d.practices == nil {
		return nil
	}
	for range 50 {
		if d.practices.Get(SpanishPractice).Locale == "es" {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return errSolNotReady
}

func (d *devPages) solSignin(ctx context.Context, r *run) error {
	if err := d.solReady(ctx); err != nil {
		return err
	}
	return d.signin(ctx, r)
}

func (d *devPages) solSigninEnglish(ctx context.Context, r *run) error {
	if err := d.solReady(ctx); err != nil {
		return err
	}
	c := r.client()
	c.Locale = "en"
	return d.publish(ctx, &events.SigninRequested{Envelope: r.envelope(), Client: c, ReturnTo: "/messages"})
}

// practiceGetter is what the panel reads of the practice directory.
type practiceGetter interface {
	Get(id string) practice.Settings
}
