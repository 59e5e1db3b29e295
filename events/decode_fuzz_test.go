package events_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/linkpipe/linkpipe/events"
	"github.com/linkpipe/linkpipe/internal/bus"
)

// knownSubjects are the action subjects Decode understands: the ones the
// issuer consumes.
var knownSubjects = bus.ActionSubjects

// FuzzDecode feeds Decode arbitrary subjects and payloads. Properties:
//   - it never panics;
//   - an error is a *FieldError or wraps ErrTooLarge, ErrMalformed,
//     ErrUnknownSubject or ErrUnsupportedVersion, and its message carries
//     no CR or LF (the input's are quoted, never copied);
//   - an unknown subject is ErrUnknownSubject, a payload over MaxEventSize
//     ErrTooLarge;
//   - a decoded action is of its subject, passes Validate, holds no control
//     character in any string and only contract ids in its envelope, and
//     round-trips: Marshal then Decode gives an action that marshals to the
//     same bytes.
//
// A subject outside the known list is also tried as one of the known
// subjects (chosen by its length), so random subjects still exercise the
// decoders.
func FuzzDecode(f *testing.F) {
	golden, err := filepath.Glob("testdata/golden/actions.*.json")
	if err != nil || len(golden) == 0 {
		f.Fatalf("golden files: %v %v", golden, err)
	}
	for _, p := range golden {
		data, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(strings.TrimSuffix(filepath.Base(p), ".json"), data)
	}
	f.Add(events.SubjectSigninRequested, []byte(`{"event_id":"e\r\n1","practice_id":"acme","client":{"id":"c","email":"a@b.example\r\nBcc: x@y.example"}}`))
	f.Add(events.SubjectSigninRequested, []byte(`{"event_id":"e1","practice_id":"acme","client":{"id":"c","email":"a@b.example","name":"A\u000d\u000aB"}}`))
	f.Add(events.SubjectDocumentShared, []byte("{\"event_id\":\"e1\",\"practice_id\":\"a\x00\"}"))
	f.Add(events.SubjectPracticeUpdated, []byte(`{"event_id":"e1","practice_id":"acme","version":2,"practice":{}}`))
	f.Add("actions.nope\r\n", []byte(`{}`))
	f.Add(events.SubjectClientLinksRevoked, []byte(`{"event_id":"e1","practice_id":"acme","client":{"id":"c"}} {}`))
	f.Add(events.SubjectAppointmentScheduled, bytes.Repeat([]byte(" "), events.MaxEventSize+1))

	f.Fuzz(func(t *testing.T, subject string, data []byte) {
		known := false
		for _, s := range knownSubjects {
			if s == subject {
				known = true
			}
		}
		if !known {
			_, err := events.Decode(subject, data)
			if len(data) <= events.MaxEventSize && !errors.Is(err, events.ErrUnknownSubject) {
				t.Fatalf("unknown subject %q: got %v, want ErrUnknownSubject", subject, err)
			}
			checkDecodeErr(t, err)
			subject = knownSubjects[len(subject)%len(knownSubjects)]
		}
		a, err := events.Decode(subject, data)
		if err != nil {
			if a != nil {
				t.Fatalf("Decode returned both %#v and %v", a, err)
			}
			checkDecodeErr(t, err)
			if len(data) > events.MaxEventSize && !errors.Is(err, events.ErrTooLarge) {
				t.Fatalf("%d bytes: got %v, want ErrTooLarge", len(data), err)
			}
			return
		}
		if a.Subject() != subject {
			t.Fatalf("decoded %T from %s", a, subject)
		}
		if err := a.Validate(); err != nil {
			t.Fatalf("decoded action does not validate: %v", err)
		}
		env := events.EnvelopeOf(a)
		if !events.ValidID(env.EventID) || !events.ValidID(env.PracticeID) {
			t.Fatalf("decoded envelope with invalid ids: %+v", env)
		}
		noControl(t, reflect.ValueOf(a), "action")

		out, err := events.Marshal(a)
		if err != nil {
			t.Fatalf("decoded action does not marshal: %v", err)
		}
		b, err := events.Decode(subject, out)
		if err != nil {
			t.Fatalf("re-marshaled action does not decode: %v\n%s", err, out)
		}
		again, err := events.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(out, again) {
			t.Fatalf("round trip changed the action:\n%s\n%s", out, again)
		}
		if events.EnvelopeOf(b) != env {
			t.Fatalf("round trip changed the envelope: %+v, %+v", env, events.EnvelopeOf(b))
		}
	})
}

// checkDecodeErr checks that err is one of Decode's documented kinds and
// that its message has no line break.
func checkDecodeErr(t *testing.T, err error) {
	t.Helper()
	var fe *events.FieldError
	switch {
	case errors.As(err, &fe):
		if fe.Field == "" || fe.Reason == "" {
			t.Fatalf("field error without field or reason: %#v", fe)
		}
	case errors.Is(err, events.ErrTooLarge), errors.Is(err, events.ErrMalformed),
		errors.Is(err, events.ErrUnknownSubject), errors.Is(err, events.ErrUnsupportedVersion):
	default:
		t.Fatalf("undocumented error kind %T: %v", err, err)
	}
	if strings.ContainsAny(err.Error(), "\r\n") {
		t.Fatalf("error message carries a line break: %q", err.Error())
	}
}

// noControl fails if any string reachable from v holds a control character
// (CR and LF above all: they would inject mail headers).
func noControl(t *testing.T, v reflect.Value, path string) {
	t.Helper()
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface:
		if !v.IsNil() {
			noControl(t, v.Elem(), path)
		}
	case reflect.Struct:
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				noControl(t, v.Field(i), path+"."+v.Type().Field(i).Name)
			}
		}
	case reflect.Slice:
		for i := range v.Len() {
			noControl(t, v.Index(i), path)
		}
	case reflect.String:
		for _, r := range v.String() {
			if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
				t.Fatalf("%s holds control character %U: %q", path, r, v.String())
			}
		}
	}
}
