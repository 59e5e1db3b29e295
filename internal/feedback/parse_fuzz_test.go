package feedback

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzParse feeds parse arbitrary queue message bodies (seeded with AWS's
// samples, SNS-wrapped and raw). Properties: it never panics; an error
// wraps ErrMalformed or ErrUnknown and its text has no line break, no
// "@" and at most a bounded quote of the input; an accepted event has a
// kind, and a Delivery, Bounce or Complaint names its email and has its
// own object; a bounce detail is one valid UTF-8 line of bounded length
// without an address.
func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.json")
	for _, p := range files {
		data, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte(`{"Type":"Notification","Message":"{\"eventType\":\"Bounce\",\"mail\":{\"messageId\":\"m\"},\"bounce\":{\"bounceSubType\":\"x\\r\\ny@z.example\"}}"}`))
	f.Add([]byte(`{"Type":"Notification","Message":"not json"}`))
	f.Add([]byte(`{"notificationType":"Complaint","mail":{"messageId":""}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		e, err := parse(body)
		if err != nil {
			if e != nil {
				t.Fatal("both an event and an error")
			}
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrUnknown) {
				t.Fatalf("undocumented error %v", err)
			}
			if strings.ContainsAny(err.Error(), "\r\n") {
				t.Fatalf("error with a line break: %q", err.Error())
			}
			return
		}
		k := e.kind()
		if k == "" {
			t.Fatal("accepted an event without a kind")
		}
		if ignored[k] {
			return
		}
		if e.Mail == nil || (e.Mail.MessageID == "" && e.mailTag() == "") {
			t.Fatalf("accepted a %s naming no email", k)
		}
		if k == kindBounce {
			if e.Bounce == nil {
				t.Fatal("bounce without its object")
			}
			d := e.bounceDetail()
			if !utf8.ValidString(d) || strings.ContainsAny(d, "\r\n@") || len(d) > 500 {
				t.Fatalf("bounce detail %q", d)
			}
		}
		if k == kindComplaint && e.Complaint == nil {
			t.Fatal("complaint without its object")
		}
	})
}
