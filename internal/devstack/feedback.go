package devstack

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/linkpipe/linkpipe/internal/mail"
	"github.com/linkpipe/linkpipe/internal/mailer"
)

// feedbackQueueURL names the dev stack's feedback queue (the consumer
// passes it back on every call; nothing else reads it).
const feedbackQueueURL = "local://linkpipe-dev/ses-events"

// feedbackVisibility is how long a received message stays invisible
// unless the consumer deletes it or changes it (SQS's default is 30 s).
const feedbackVisibility = 30 * time.Second

// feedbackQueue stands in for the SQS queue through which SES's delivery
// events reach the mailer in production (SES → SNS → SQS): the scenario
// panel puts an SES event on it, as SNS would deliver it, and the real
// feedback consumer (internal/feedback) receives, applies and deletes it.
// It keeps SQS's at-least-once manners that the consumer relies on: a
// received message comes back after its visibility timeout unless
// deleted, with its receive count.
type feedbackQueue struct {
	// visibility is how long a received message stays invisible unless
	// deleted or changed (feedbackVisibility).
	visibility time.Duration
	mu         sync.Mutex
	msgs       []*queued
	// wake is closed (and replaced) when a message is sent.
	wake chan struct{}
	n    int
}

type queued struct {
	id, body  string
	receives  int
	visibleAt time.Time
}

func newFeedbackQueue() *feedbackQueue {
	return &feedbackQueue{visibility: feedbackVisibility, wake: make(chan struct{})}
}

// send puts an SNS notification carrying sesEvent on the queue.
func (q *feedbackQueue) send(sesEvent []byte) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.n++
	id := "dev-feedback-" + strconv.Itoa(q.n)
	body, err := json.Marshal(map[string]string{"Type": "Notification", "MessageId": id,
		"TopicArn": "arn:aws:sns:local:000000000000:linkpipe-dev-ses-events", "Message": string(sesEvent)})
	if err != nil {
		return fmt.Errorf("devstack: feedback: %w", err)
	}
	q.msgs = append(q.msgs, &queued{id: id, body: string(body)})
	close(q.wake)
	q.wake = make(chan struct{})
	return nil
}

// ReceiveMessage implements feedback.Queue: up to MaxNumberOfMessages
// visible messages, waiting up to WaitTimeSeconds for one.
func (q *feedbackQueue) ReceiveMessage(ctx context.Context, in *sqs.ReceiveMessageInput, _ ...func(*sqs.Options)) (*sqs.ReceiveMessageOutput, error) {
	deadline := time.Now().Add(time.Duration(in.WaitTimeSeconds) * time.Second)
	for {
		q.mu.Lock()
		now := time.Now()
		out := &sqs.ReceiveMessageOutput{}
		next := deadline
		for _, m := range q.msgs {
			if len(out.Messages) == int(max(in.MaxNumberOfMessages, 1)) {
				break
			}
			if m.visibleAt.After(now) {
				next = minTime(next, m.visibleAt)
				continue
			}
			m.receives++
			m.visibleAt = now.Add(q.visibility)
			out.Messages = append(out.Messages, types.Message{MessageId: aws.String(m.id), ReceiptHandle: aws.String(m.id),
				Body: aws.String(m.body), Attributes: map[string]string{
					string(types.MessageSystemAttributeNameApproximateReceiveCount): strconv.Itoa(m.receives)}})
		}
		wake := q.wake
		q.mu.Unlock()
		if len(out.Messages) > 0 || !now.Before(deadline) {
			return out, nil
		}
		t := time.NewTimer(time.Until(next))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-wake:
		case <-t.C:
		}
		t.Stop()
	}
}

// DeleteMessage implements feedback.Queue.
func (q *feedbackQueue) DeleteMessage(_ context.Context, in *sqs.DeleteMessageInput, _ ...func(*sqs.Options)) (*sqs.DeleteMessageOutput, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for i, m := range q.msgs {
		if m.id == aws.ToString(in.ReceiptHandle) {
			q.msgs = append(q.msgs[:i], q.msgs[i+1:]...)
			return &sqs.DeleteMessageOutput{}, nil
		}
	}
	return &sqs.DeleteMessageOutput{}, nil
}

// ChangeMessageVisibility implements feedback.Queue.
func (q *feedbackQueue) ChangeMessageVisibility(_ context.Context, in *sqs.ChangeMessageVisibilityInput, _ ...func(*sqs.Options)) (*sqs.ChangeMessageVisibilityOutput, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, m := range q.msgs {
		if m.id == aws.ToString(in.ReceiptHandle) {
			m.visibleAt = time.Now().Add(time.Duration(in.VisibilityTimeout) * time.Second)
		}
	}
	return &sqs.ChangeMessageVisibilityOutput{}, nil
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// noEmailYet: the bounce step found no email of the run to bounce.
const noEmailYet = "No email of this run has arrived yet; try again in a moment"

var errNoEmailYet = errors.New(noEmailYet)

// noSink: the stack sends through SES, whose own events say what bounced.
const noSink = "This stack sends through SES: its bounces come from SES, not from the panel"

var errNoSink = errors.New(noSink)

// bounce reports a permanent bounce of the run's latest email, as SES
// would (an event-publishing Bounce event, through SNS), on the local
// feedback queue.
func (d *devPages) bounce(_ context.Context, r *run) error {
	if d.sink == nil || d.feedback == nil {
		return errNoSink
	}
	msgs, _, err := d.sink.Page(mailer.PageQuery{To: r.Email, Limit: 1})
	if err != nil {
		return fmt.Errorf("devstack: inbox: %w", err)
	}
	if len(msgs) == 0 {
		return errNoEmailYet
	}
	m := msgs[0]
	at := d.clock.Now().UTC()
	ev := map[string]any{
		"eventType": "Bounce",
		"bounce": map[string]any{
			"bounceType": "Permanent", "bounceSubType": "General", "timestamp": at,
			"feedbackId": "dev-" + r.ID + "-" + m.ID, "reportingMTA": "dns; localhost.localdomain",
			"bouncedRecipients": []map[string]string{{"emailAddress": m.To, "action": "failed", "status": "5.1.1",
				"diagnosticCode": "smtp; 550 5.1.1 user unknown (reported by linkpipe dev)"}},
		},
		"mail": map[string]any{"timestamp": m.At.UTC(), "messageId": m.MessageID, "source": m.From,
			"destination": []string{m.To}, "tags": map[string][]string{mail.TagMail: {m.MailID}}},
	}
	b, err := json.Marshal(ev)
	if err != nil {
		return fmt.Errorf("devstack: bounce: %w", err)
	}
	return d.feedback.send(b)
}
