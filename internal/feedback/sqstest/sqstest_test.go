package sqstest_test

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/aws/smithy-go"

	"github.com/linkpipe/linkpipe/internal/feedback/sqstest"
)

// The real SDK client (JSON 1.0 protocol, MD5 checks on) sends, receives,
// hides a received message for the visibility timeout, redelivers it
// after ChangeMessageVisibility, and deletes it by receipt handle.
func TestRealClientAgainstTheQueue(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	q := sqstest.Start(t)
	c := sqs.New(sqs.Options{}, q.Options())
	sent, err := c.SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: aws.String(q.URL), MessageBody: aws.String(`{"hello":"world"}`)})
	if err != nil {
		t.Fatal(err)
	}
	recv := func(wait int32) []types.Message {
		out, err := c.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: aws.String(q.URL), MaxNumberOfMessages: 10,
			WaitTimeSeconds: wait, MessageSystemAttributeNames: []types.MessageSystemAttributeName{types.MessageSystemAttributeNameApproximateReceiveCount}})
		if err != nil {
			t.Fatal(err)
		}
		return out.Messages
	}
	got := recv(1)
	if len(got) != 1 || aws.ToString(got[0].Body) != `{"hello":"world"}` || aws.ToString(got[0].MessageId) != aws.ToString(sent.MessageId) {
		t.Fatalf("received %+v", got)
	}
	if n := got[0].Attributes["ApproximateReceiveCount"]; n != "1" {
		t.Fatalf("receive count %q", n)
	}
	if again := recv(0); len(again) != 0 {
		t.Fatalf("an in-flight message was received again: %+v", again)
	}
	// Visible again at once: redelivered with a new receipt handle.
	if _, err := c.ChangeMessageVisibility(ctx, &sqs.ChangeMessageVisibilityInput{QueueUrl: aws.String(q.URL),
		ReceiptHandle: got[0].ReceiptHandle, VisibilityTimeout: 0}); err != nil {
		t.Fatal(err)
	}
	re := recv(1)
	if len(re) != 1 || re[0].Attributes["ApproximateReceiveCount"] != strconv.Itoa(2) || aws.ToString(re[0].ReceiptHandle) == aws.ToString(got[0].ReceiptHandle) {
		t.Fatalf("redelivery %+v", re)
	}
	// The old receipt handle no longer deletes it; the new one does.
	_, err = c.DeleteMessage(ctx, &sqs.DeleteMessageInput{QueueUrl: aws.String(q.URL), ReceiptHandle: got[0].ReceiptHandle})
	var apiErr smithy.APIError
	if !errors.As(err, &apiErr) || apiErr.ErrorCode() != "ReceiptHandleIsInvalid" {
		t.Fatalf("delete with a stale handle: %v", err)
	}
	if _, err := c.DeleteMessage(ctx, &sqs.DeleteMessageInput{QueueUrl: aws.String(q.URL), ReceiptHandle: re[0].ReceiptHandle}); err != nil {
		t.Fatal(err)
	}
	if q.Len() != 0 || len(q.Deleted()) != 1 {
		t.Fatalf("queue %d, deleted %v", q.Len(), q.Deleted())
	}
	// Long polling returns as soon as a message arrives.
	go func() { time.Sleep(200 * time.Millisecond); q.Send("late") }()
	if late := recv(10); len(late) != 1 || aws.ToString(late[0].Body) != "late" {
		t.Fatalf("long poll %+v", late)
	}
	// The visibility timeout expires: redelivered without any call.
	q.SetVisibility(time.Second)
	q.Send("expires")
	if first := recv(1); len(first) == 0 {
		t.Fatal("nothing received")
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for _, m := range recv(2) {
			if aws.ToString(m.Body) == "expires" && m.Attributes["ApproximateReceiveCount"] == "2" {
				return
			}
		}
	}
	t.Fatal("the message was not redelivered after its visibility timeout")
}
