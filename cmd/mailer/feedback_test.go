package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/linkpipe/linkpipe/events"
	"github.com/linkpipe/linkpipe/internal/bus"
	"github.com/linkpipe/linkpipe/internal/bus/bustest"
	"github.com/linkpipe/linkpipe/internal/eventually"
	"github.com/linkpipe/linkpipe/internal/feedback/sqstest"
	"github.com/linkpipe/linkpipe/internal/ses/sestest"
)

// With LINKPIPE_SES_EVENTS_QUEUE_URL set, the mailer process polls the
// queue (AWS_ENDPOINT_URL_SQS pointing at a local SQS JSON endpoint) and
// turns SES's bounce of an email it sent into links.<id>.bounced.
func TestMailerProcessConsumesSESFeedback(t *testing.T) {
	srv := bustest.Start(t)
	_, js := srv.Connect(t)
	fake := sestest.NewFake(t)
	q := sqstest.Start(t)
	env := map[string]string{"NATS_URL": srv.URL, "LINKPIPE_LINK_KEY": linkKey(), "LINKPIPE_MAIL_DRIVER": "ses",
		"LINKPIPE_MAIL_FROM": "links@acme.example", "LINKPIPE_DATA_DIR": t.TempDir(), "LINKPIPE_ADMIN_ADDR": "127.0.0.1:0",
		"LINKPIPE_PUBLIC_URL": "https://links.example", "LINKPIPE_SES_CONFIGURATION_SET": "linkpipe-events",
		"LINKPIPE_SES_EVENTS_QUEUE_URL": q.URL, "AWS_ENDPOINT_URL_SQS": q.Endpoint,
		"AWS_REGION": sestest.Region, "AWS_ENDPOINT_URL_SESV2": fake.URL, "AWS_ACCESS_KEY_ID": "AKIDTEST", "AWS_SECRET_ACCESS_KEY": "secret-test"}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() { done <- run(ctx, nil, envOf(env), pw); pw.Close() }()
	readyAddr(t, pr)

	cmd := command(t, "evt-fb", "pat@example.com")
	queue(t, js, cmd)
	links := bus.NewReader(js, bus.StreamLinks)
	var sent events.LinkEvent
	eventually.True(t, 20*time.Second, func() bool {
		_, err := links.LastJSON(context.Background(), events.LinkSubject(cmd.LinkID, events.TypeSent), &sent)
		return err == nil
	}, "the sent event")

	data, err := os.ReadFile(filepath.Join("..", "..", "internal", "feedback", "testdata", "event-bounce.json"))
	if err != nil {
		t.Fatal(err)
	}
	event := strings.ReplaceAll(string(data), "EXAMPLE7c191be45-e9aedb9a-02f9-4d12-a87d-dd0099a07f8a-000000", sent.MessageID)
	body, _ := json.Marshal(map[string]string{"Type": "Notification", "MessageId": "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324",
		"TopicArn": "arn:aws:sns:us-east-1:123456789012:linkpipe-ses-events", "Message": event, "Timestamp": "2026-11-24T10:02:00.000Z"})
	q.Send(string(body))
	var bounced events.LinkEvent
	eventually.True(t, 30*time.Second, func() bool {
		_, err := links.LastJSON(context.Background(), events.LinkSubject(cmd.LinkID, events.TypeBounced), &bounced)
		if err != nil && !errors.Is(err, bus.ErrNotFound) {
			t.Fatal(err)
		}
		return err == nil
	}, "the bounced event")
	if bounced.Reason != events.BouncePermanent || bounced.MessageID != sent.MessageID {
		t.Fatalf("bounced %+v", bounced)
	}
	eventually.True(t, 20*time.Second, func() bool { return q.Len() == 0 }, "the queue to be empty")
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("run did not stop")
	}
}
