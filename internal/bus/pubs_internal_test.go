package bus

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
)

// TestParsePubAck reads every form of acknowledgement nats-server writes
// as package jetstream reads it: the plain one directly, the others (a
// domain, a duplicate, a refusal) as JSON, and refuses what is none.
func TestParsePubAck(t *testing.T) {
	for data, want := range map[string]jetstream.PubAck{
		`{"stream":"MAIL","seq":42}`:                                     {Stream: "MAIL", Sequence: 42},
		`{"stream":"KV_linkpipe_recipients","seq":18446744073709551615}`: {Stream: "KV_linkpipe_recipients", Sequence: 18446744073709551615},
		`{"stream":"LINKS","domain":"hub","seq":7}`:                      {Stream: "LINKS", Domain: "hub", Sequence: 7},
		`{"stream":"LINKS","seq":7,"duplicate": true}`:                   {Stream: "LINKS", Sequence: 7, Duplicate: true},
		`{"stream":"A\"B","seq":1}`:                                      {Stream: `A"B`, Sequence: 1},
		`{"stream":"S","seq":3,"val":"v"}`:                               {Stream: "S", Sequence: 3, Value: "v"},
	} {
		got, err := parsePubAck([]byte(data))
		if err != nil || *got != want {
			t.Errorf("%s: %+v, %v; want %+v", data, got, err, want)
		}
	}

	_, err := parsePubAck([]byte(`{"error":{"code":400,"err_code":10071,"description":"wrong last sequence: 3"},"stream":"SCOPES","seq":0}`))
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) || apiErr.ErrorCode != jetstream.JSErrCodeStreamWrongLastSequence {
		t.Errorf("refusal: %v, want the APIError 10071", err)
	}
	for _, bad := range []string{``, `{}`, `not json`, `{"stream":"","seq":1}`, `{"stream":"S","seq":}`, `{"stream":"S","seq":-1}`,
		`{"stream":"S","seq":99999999999999999999}`} {
		if ack, err := parsePubAck([]byte(bad)); err == nil {
			t.Errorf("%q read as %+v", bad, ack)
		}
	}
}

// BenchmarkParsePubAck: parsePubAck against encoding/json decoding the
// acknowledgement as package jetstream does.
func BenchmarkParsePubAck(b *testing.B) {
	data := []byte(`{"stream":"KV_linkpipe_recipients","seq":1234567}`)
	b.Run("parsePubAck", func(b *testing.B) {
		for b.Loop() {
			if _, err := parsePubAck(data); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("json", func(b *testing.B) {
		for b.Loop() {
			var ack struct {
				Type  string              `json:"type"`
				Error *jetstream.APIError `json:"error,omitempty"`
				*jetstream.PubAck
			}
			if err := json.Unmarshal(data, &ack); err != nil || ack.PubAck == nil {
				b.Fatal(err)
			}
		}
	})
}
