package devstack

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
)

// TestFeedbackQueueKeepsSQSManners checks the dev stack's stand-in for the
// SES events queue behaves as the feedback consumer expects of SQS: a
// received message is invisible until deleted or made visible again, comes
// back with its receive count, and a long poll wakes when a message is
// sent.
func TestFeedbackQueueKeepsSQSManners(t *testing.T) {
	ctx := context.Background()
	q := newFeedbackQueue()
	receive := func(wait int32) []types.Message {
		t.Helper()
		out, err := q.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: aws.String(feedbackQueueURL), MaxNumberOfMessages: 10, WaitTimeSeconds: wait})
		if err != nil {
			t.Fatal(err)
		}
		return out.Messages
	}
	if m := receive(0); len(m) != 0 {
		t.Fatalf("empty queue gave %d messages", len(m))
	}
	if err := q.send([]byte(`{"eventType":"Bounce"}`)); err != nil {
		t.Fatal(err)
	}
	m := receive(0)
	if len(m) != 1 || m[0].Attributes[string(types.MessageSystemAttributeNameApproximateReceiveCount)] != "1" {
		t.Fatalf("first receive: %+v", m)
	}
	if body := aws.ToString(m[0].Body); body == "" || !jsonHas(body, `"Type":"Notification"`, `"Message":"{\"eventType\":\"Bounce\"}"`) {
		t.Errorf("body %s: want an SNS notification carrying the event", body)
	}
	if again := receive(0); len(again) != 0 {
		t.Fatalf("a received message is visible again at once: %+v", again)
	}
	if _, err := q.ChangeMessageVisibility(ctx, &sqs.ChangeMessageVisibilityInput{ReceiptHandle: m[0].ReceiptHandle, VisibilityTimeout: 0}); err != nil {
		t.Fatal(err)
	}
	m = receive(0)
	if len(m) != 1 || m[0].Attributes[string(types.MessageSystemAttributeNameApproximateReceiveCount)] != "2" {
		t.Fatalf("after ChangeMessageVisibility(0): %+v", m)
	}
	if _, err := q.DeleteMessage(ctx, &sqs.DeleteMessageInput{ReceiptHandle: m[0].ReceiptHandle}); err != nil {
		t.Fatal(err)
	}
	if _, err := q.ChangeMessageVisibility(ctx, &sqs.ChangeMessageVisibilityInput{ReceiptHandle: m[0].ReceiptHandle, VisibilityTimeout: 0}); err != nil {
		t.Fatal(err)
	}
	if m := receive(0); len(m) != 0 {
		t.Fatalf("a deleted message came back: %+v", m)
	}

	// A received message neither deleted nor changed comes back once its
	// visibility timeout has passed, with its receive count.
	q.visibility = 200 * time.Millisecond
	q.send([]byte(`{"eventType":"Complaint"}`))
	if m := receive(0); len(m) != 1 {
		t.Fatalf("receive: %+v", m)
	}
	if m := receive(0); len(m) != 0 {
		t.Fatalf("visible again before its timeout: %+v", m)
	}
	m = receive(2) // a long poll that ends when the message is visible again
	if len(m) != 1 || m[0].Attributes[string(types.MessageSystemAttributeNameApproximateReceiveCount)] != "2" {
		t.Fatalf("after the visibility timeout: %+v", m)
	}
	q.DeleteMessage(ctx, &sqs.DeleteMessageInput{ReceiptHandle: m[0].ReceiptHandle})
	q.visibility = feedbackVisibility

	// A long poll returns when a message arrives, not at its end.
	go func() {
		time.Sleep(100 * time.Millisecond)
		q.send([]byte(`{"eventType":"Delivery"}`))
	}()
	start := time.Now()
	if m := receive(20); len(m) != 1 {
		t.Fatalf("long poll: %+v", m)
	}
	if time.Since(start) > 10*time.Second {
		t.Error("the long poll did not wake when a message was sent")
	}

	// It ends with its context.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := q.ReceiveMessage(cctx, &sqs.ReceiveMessageInput{WaitTimeSeconds: 20}); err == nil {
		t.Error("a canceled long poll returned no error")
	}
}

func jsonHas(body string, parts ...string) bool {
	for _, p := range parts {
		if !strings.Contains(body, p) {
			return false
		}
	}
	return true
}
