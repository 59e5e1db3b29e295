package devstack_test

import (
	"context"
	"encoding/json"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/linkpipe/linkpipe/events"
	"github.com/linkpipe/linkpipe/internal/bus"
	"github.com/linkpipe/linkpipe/internal/devstack"
	"github.com/linkpipe/linkpipe/internal/eventually"
)

// runJSON is the part of a scenario run's JSON the tests read.
type runJSON struct {
	ID     string   `json:"id"`
	Client string   `json:"client"`
	Next   int      `json:"next"`
	Errors []string `json:"errors"`
	Steps  []struct {
		Done bool `json:"done"`
	} `json:"steps"`
	Emails []struct {
		Kind    string   `json:"kind"`
		Subject string   `json:"subject"`
		Links   []string `json:"links"`
	} `json:"emails"`
	Links []struct {
		LinkID  string `json:"link_id"`
		Purpose string `json:"purpose"`
		Works   bool   `json:"works"`
		Reason  string `json:"reason"`
		// Mail, Delivery and Suppressed are the fate of the link's email.
		Mail       string `json:"mail"`
		Delivery   string `json:"delivery"`
		Suppressed bool   `json:"suppressed"`
	} `json:"links"`
}

// panel drives the /dev scenario panel of one dev stack.
type panel struct {
	t  *testing.T
	st *devstack.Stack
}

// start presses a scenario's button and returns its run id.
func (p panel) start(name string) string {
	p.t.Helper()
	resp, _ := do(p.t, noRedirect(), "POST", p.st.URL+"/dev/scenarios/"+name)
	loc := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(loc, "/dev/runs/run-") {
		p.t.Fatalf("start %s: %d %q", name, resp.StatusCode, loc)
	}
	return strings.TrimPrefix(loc, "/dev/runs/")
}

func (p panel) step(id string, n int) {
	p.t.Helper()
	if resp, _ := do(p.t, noRedirect(), "POST", p.st.URL+"/dev/runs/"+id+"/steps/"+strconv.Itoa(n)); resp.StatusCode != http.StatusSeeOther {
		p.t.Fatalf("step %d of %s: %d", n, id, resp.StatusCode)
	}
}

func (p panel) get(id string) runJSON {
	p.t.Helper()
	resp, body := do(p.t, noRedirect(), "GET", p.st.URL+"/dev/runs/"+id+".json")
	var r runJSON
	if resp.StatusCode != http.StatusOK || json.Unmarshal([]byte(body), &r) != nil {
		p.t.Fatalf("run %s: %d %s", id, resp.StatusCode, body)
	}
	if len(r.Errors) > 0 {
		p.t.Fatalf("run %s: %v", id, r.Errors)
	}
	return r
}

// until waits for the run to satisfy ok, showing the last run read.
func (p panel) until(id, what string, ok func(r runJSON) bool) runJSON {
	p.t.Helper()
	var last runJSON
	deadline := time.Now().Add(20 * time.Second)
	for {
		if last = p.get(id); ok(last) {
			return last
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("timed out waiting for %s: emails %s, links %s", what, kinds(last), verdicts(last))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func kinds(r runJSON) string {
	var k []string
	for _, e := range r.Emails {
		k = append(k, e.Kind)
	}
	return strings.Join(k, ",")
}

// verdicts lists each link as purpose:works or purpose:reason, sorted (two
// actions published together may be handled in either order).
func verdicts(r runJSON) string {
	var v []string
	for _, l := range r.Links {
		s := l.Purpose + ":"
		if l.Works {
			s += "works"
		} else {
			s += l.Reason
		}
		v = append(v, s)
	}
	sort.Strings(v)
	return strings.Join(v, ",")
}

// TestScenarioPanel plays every scenario of the /dev panel against the real
// dev stack and checks what each one promises: the emails that arrive (from
// the inbox) and the verdict of each link (from the ledger), step by step.
func TestScenarioPanel(t *testing.T) {
	st, err := devstack.Start(context.Background(), devstack.Config{DataDir: t.TempDir(), HTTPAddr: "127.0.0.1:0", NATSPort: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })

	// Every scenario is offered on /dev.
	_, page := do(t, noRedirect(), "GET", st.URL+"/dev")
	for _, name := range []string{"signin", "document", "reminders", "reschedule", "cancel", "in-person", "revoke", "bounce", "practice"} {
		if !strings.Contains(page, `action="/dev/scenarios/`+name+`"`) {
			t.Errorf("/dev offers no %s scenario", name)
		}
	}

	t.Run("signin then a newer one", func(t *testing.T) {
		p := panel{t, st}
		id := p.start("signin")
		p.until(id, "one sign-in email, its link working", func(r runJSON) bool {
			return kinds(r) == "signin" && verdicts(r) == "signin:works"
		})
		p.step(id, 1)
		r := p.until(id, "a second email; the first link superseded", func(r runJSON) bool {
			return kinds(r) == "signin,signin" && verdicts(r) == "signin:superseded,signin:works"
		})
		if r.Next != 2 || !r.Steps[1].Done {
			t.Errorf("steps: next %d %+v", r.Next, r.Steps)
		}
		// A step already taken is not taken again (a double submit).
		p.step(id, 1)
		time.Sleep(300 * time.Millisecond)
		if r := p.get(id); len(r.Links) != 2 {
			t.Errorf("a repeated step published again: %s", verdicts(r))
		}
	})

	t.Run("document survives a sign-in", func(t *testing.T) {
		p := panel{t, st}
		id := p.start("document")
		p.until(id, "the document email", func(r runJSON) bool { return kinds(r) == "document" && verdicts(r) == "document:works" })
		p.step(id, 1)
		p.until(id, "both links work", func(r runJSON) bool {
			return kinds(r) == "document,signin" && verdicts(r) == "document:works,signin:works"
		})
	})

	t.Run("reminders a minute apart", func(t *testing.T) {
		p := panel{t, st}
		id := p.start("reminders")
		p.until(id, "the confirmation", func(r runJSON) bool {
			return kinds(r) == "appointment_confirmed" && verdicts(r) == "telehealth:works" && len(r.Emails[0].Links) == 1
		})
		// Three reminder schedules on ACTIONS, due 1, 2 and 3 minutes from
		// now (the server fires them; the issuer's tests see them fire).
		s, err := st.JetStream().Stream(context.Background(), bus.StreamActions)
		if err != nil {
			t.Fatal(err)
		}
		eventually.True(t, 10*time.Second, func() bool {
			info, err := s.Info(context.Background(), jetstream.WithSubjectFilter(bus.ReminderSchedulePrefix+devstack.DemoPractice+".appt-"+id+".>"))
			return err == nil && len(info.State.Subjects) == 3
		}, "three reminder schedules")
	})

	t.Run("reschedule revives an expired link", func(t *testing.T) {
		p := panel{t, st}
		id := p.start("reschedule")
		p.until(id, "the link expired", func(r runJSON) bool { return verdicts(r) == "telehealth:"+events.ReasonExpired })
		p.step(id, 1)
		r := p.until(id, "the same link works again, a rescheduled email", func(r runJSON) bool {
			return verdicts(r) == "telehealth:works" && strings.HasSuffix(kinds(r), "appointment_rescheduled")
		})
		if len(r.Links) != 1 {
			t.Errorf("%d links, want the one", len(r.Links))
		}
	})

	t.Run("cancel", func(t *testing.T) {
		p := panel{t, st}
		id := p.start("cancel")
		p.until(id, "the confirmation", func(r runJSON) bool { return kinds(r) == "appointment_confirmed" && verdicts(r) == "telehealth:works" })
		p.step(id, 1)
		r := p.until(id, "the link refused as canceled", func(r runJSON) bool {
			return kinds(r) == "appointment_confirmed,appointment_canceled" && verdicts(r) == "telehealth:"+events.ReasonCanceled
		})
		if n := len(r.Emails[1].Links); n != 0 {
			t.Errorf("the cancellation carries %d links", n)
		}
	})

	t.Run("in person", func(t *testing.T) {
		p := panel{t, st}
		id := p.start("in-person")
		r := p.until(id, "a confirmation", func(r runJSON) bool { return kinds(r) == "appointment_confirmed" })
		if len(r.Emails[0].Links) != 0 || len(r.Links) != 0 {
			t.Errorf("an in-person confirmation with links: %+v", r)
		}
	})

	t.Run("revoke", func(t *testing.T) {
		p := panel{t, st}
		id := p.start("revoke")
		p.until(id, "two links working", func(r runJSON) bool { return verdicts(r) == "document:works,signin:works" })
		p.step(id, 1)
		p.until(id, "both revoked", func(r runJSON) bool {
			return verdicts(r) == "document:"+events.ReasonRevoked+",signin:"+events.ReasonRevoked
		})
		p.step(id, 2)
		p.until(id, "a new sign-in works", func(r runJSON) bool {
			return verdicts(r) == "document:"+events.ReasonRevoked+",signin:"+events.ReasonSuperseded+",signin:works"
		})
	})

	t.Run("a bounced address, then lifted", func(t *testing.T) {
		p := panel{t, st}
		id := p.start("bounce")
		p.until(id, "the sign-in email", func(r runJSON) bool { return kinds(r) == "signin" && verdicts(r) == "signin:works" })
		p.step(id, 1)
		// The real feedback consumer took the SES event off the local
		// queue: the email is bounced and its address suppressed.
		p.until(id, "the bounce applied", func(r runJSON) bool {
			return len(r.Links) == 1 && r.Links[0].Suppressed && strings.Contains(r.Links[0].Delivery, "bounced")
		})
		p.step(id, 2)
		r := p.until(id, "the new link's email refused as suppressed", func(r runJSON) bool {
			for _, l := range r.Links {
				if l.Works && l.Mail == "failed permanently" {
					return true
				}
			}
			return false
		})
		if kinds(r) != "signin" {
			t.Errorf("emails %s: one went to a suppressed address", kinds(r))
		}
		p.step(id, 3)
		p.until(id, "the suppression lifted", func(r runJSON) bool {
			for _, l := range r.Links {
				if l.Suppressed {
					return false
				}
			}
			return true
		})
		p.step(id, 4)
		p.until(id, "the email arrives again", func(r runJSON) bool { return kinds(r) == "signin,signin" })
	})

	t.Run("a Spanish practice", func(t *testing.T) {
		p := panel{t, st}
		id := p.start("practice")
		p.step(id, 1)
		r := p.until(id, "a Spanish sign-in email", func(r runJSON) bool { return kinds(r) == "signin" })
		if s := r.Emails[0].Subject; !strings.HasPrefix(s, "Su enlace para iniciar sesión en Clínica Sol") || !strings.Contains(s, "CET") && !strings.Contains(s, "CEST") {
			t.Errorf("subject %q, want Spanish with Madrid's time", s)
		}
		p.step(id, 2)
		r = p.until(id, "an English one", func(r runJSON) bool { return kinds(r) == "signin,signin" })
		if s := r.Emails[1].Subject; !strings.HasPrefix(s, "Your sign-in link for Clínica Sol") {
			t.Errorf("subject %q, want English", s)
		}
	})
}
