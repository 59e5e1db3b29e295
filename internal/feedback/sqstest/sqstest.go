// Package sqstest is a small Amazon SQS endpoint for tests of the real
// aws-sdk-go-v2 SQS client: it speaks the JSON 1.0 protocol the SDK uses
// (POST /, X-Amz-Target: AmazonSQS.<Operation>, Content-Type
// application/x-amz-json-1.0) for SendMessage, ReceiveMessage (with long
// polling), DeleteMessage and ChangeMessageVisibility, on one standard
// queue with a visibility timeout and redelivery, as SQS documents them.
// No SQS emulator reachable here speaks that protocol (goaws and sqslite
// speak only the older query protocol).
package sqstest

import (
	"crypto/md5"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
)

// Region is the region the endpoint claims.
const Region = "us-east-1"

// Queue is one standard SQS queue behind an httptest server.
type Queue struct {
	// URL is the queue URL (what LINKPIPE_SES_EVENTS_QUEUE_URL names);
	// Endpoint the server's base URL (AWS_ENDPOINT_URL_SQS).
	URL, Endpoint string
	mu            sync.Mutex
	visibility    time.Duration
	wake          chan struct{}
	msgs          []*message
	deleted       []string
	faults        int
	calls         map[string]int
}

type message struct {
	id, body      string
	receives      int
	visibleAt     time.Time
	receiptHandle string
	sentAt        time.Time
}

// Start starts a queue whose visibility timeout is 30 s; it closes with
// the test.
func Start(t testing.TB) *Queue {
	t.Helper()
	q := &Queue{visibility: 30 * time.Second, wake: make(chan struct{}), calls: map[string]int{}}
	srv := httptest.NewServer(http.HandlerFunc(q.serve))
	t.Cleanup(srv.Close)
	q.Endpoint = srv.URL
	q.URL = srv.URL + "/123456789012/linkpipe-ses-events"
	return q
}

// Options points an SQS client at the queue's endpoint with fake
// credentials.
func (q *Queue) Options() func(*sqs.Options) {
	return func(o *sqs.Options) {
		o.Region = Region
		o.BaseEndpoint = aws.String(q.Endpoint)
		o.Credentials = credentials.NewStaticCredentialsProvider("AKIDTEST", "secret-test", "")
	}
}

// Env is the environment that points a child process's SDK at the queue.
func (q *Queue) Env() []string {
	return []string{"AWS_REGION=" + Region, "AWS_ENDPOINT_URL_SQS=" + q.Endpoint,
		"AWS_ACCESS_KEY_ID=AKIDTEST", "AWS_SECRET_ACCESS_KEY=secret-test"}
}

// Send enqueues body (what SNS does) and returns its message id.
func (q *Queue) Send(body string) string {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.sendLocked(body)
}

func (q *Queue) sendLocked(body string) string {
	m := &message{id: newID(), body: body, sentAt: time.Now()}
	q.msgs = append(q.msgs, m)
	q.signalLocked()
	return m.id
}

// SetVisibility sets the queue's default visibility timeout (30 s at
// start): how long a received message stays hidden before it is
// delivered again.
func (q *Queue) SetVisibility(d time.Duration) {
	q.mu.Lock()
	q.visibility = d
	q.mu.Unlock()
}

// FailNext makes the next n requests (any operation) answer HTTP 500.
func (q *Queue) FailNext(n int) {
	q.mu.Lock()
	q.faults += n
	q.mu.Unlock()
}

// Len is the number of messages not deleted (visible or in flight).
func (q *Queue) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.msgs)
}

// Deleted returns the ids of the deleted messages, in order.
func (q *Queue) Deleted() []string {
	q.mu.Lock()
	defer q.mu.Unlock()
	return append([]string(nil), q.deleted...)
}

// Receives is how many times the message with this id was received.
func (q *Queue) Receives(id string) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, m := range q.msgs {
		if m.id == id {
			return m.receives
		}
	}
	return -1
}

// Calls is how many requests of an operation ("ReceiveMessage") arrived.
func (q *Queue) Calls(op string) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.calls[op]
}

// signalLocked wakes long polls.
func (q *Queue) signalLocked() {
	close(q.wake)
	q.wake = make(chan struct{})
}

func newID() string {
	b := make([]byte, 16)
	rand.Read(b)
	h := hex.EncodeToString(b)
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

func md5Hex(s string) string {
	sum := md5.Sum([]byte(s))
	return hex.EncodeToString(sum[:])
}

const target = "AmazonSQS."

func (q *Queue) serve(w http.ResponseWriter, r *http.Request) {
	op, ok := strings.CutPrefix(r.Header.Get("X-Amz-Target"), target)
	if r.Method != http.MethodPost || !ok || r.Header.Get("Content-Type") != "application/x-amz-json-1.0" {
		writeErr(w, http.StatusBadRequest, "InvalidAction", "not an SQS JSON 1.0 request")
		return
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return
	}
	var in struct {
		QueueUrl            string
		MessageBody         string
		ReceiptHandle       string
		MaxNumberOfMessages int
		VisibilityTimeout   *int
		WaitTimeSeconds     int
	}
	if err := json.Unmarshal(body, &in); err != nil {
		writeErr(w, http.StatusBadRequest, "InvalidParameterValue", "malformed JSON")
		return
	}
	q.mu.Lock()
	q.calls[op]++
	if q.faults > 0 {
		q.faults--
		q.mu.Unlock()
		writeErr(w, http.StatusInternalServerError, "InternalError", "injected failure")
		return
	}
	q.mu.Unlock()
	if in.QueueUrl != q.URL {
		writeErr(w, http.StatusBadRequest, "QueueDoesNotExist", "The specified queue does not exist.")
		return
	}
	switch op {
	case "SendMessage":
		q.mu.Lock()
		id := q.sendLocked(in.MessageBody)
		q.mu.Unlock()
		writeJSON(w, map[string]string{"MessageId": id, "MD5OfMessageBody": md5Hex(in.MessageBody)})
	case "ReceiveMessage":
		q.receive(w, r, in.MaxNumberOfMessages, in.VisibilityTimeout, in.WaitTimeSeconds)
	case "DeleteMessage":
		q.mu.Lock()
		defer q.mu.Unlock()
		for i, m := range q.msgs {
			if m.receiptHandle != "" && m.receiptHandle == in.ReceiptHandle {
				q.msgs = append(q.msgs[:i], q.msgs[i+1:]...)
				q.deleted = append(q.deleted, m.id)
				writeJSON(w, map[string]string{})
				return
			}
		}
		writeErr(w, http.StatusBadRequest, "ReceiptHandleIsInvalid", "The input receipt handle is invalid.")
	case "ChangeMessageVisibility":
		q.mu.Lock()
		defer q.mu.Unlock()
		if in.VisibilityTimeout == nil || *in.VisibilityTimeout < 0 || *in.VisibilityTimeout > 43200 {
			writeErr(w, http.StatusBadRequest, "InvalidParameterValue", "VisibilityTimeout must be 0 to 43200")
			return
		}
		for _, m := range q.msgs {
			if m.receiptHandle != "" && m.receiptHandle == in.ReceiptHandle {
				m.visibleAt = time.Now().Add(time.Duration(*in.VisibilityTimeout) * time.Second)
				q.signalLocked()
				writeJSON(w, map[string]string{})
				return
			}
		}
		writeErr(w, http.StatusBadRequest, "ReceiptHandleIsInvalid", "The input receipt handle is invalid.")
	default:
		writeErr(w, http.StatusBadRequest, "InvalidAction", "operation "+op+" is not supported by sqstest")
	}
}

// receive answers ReceiveMessage: up to max visible messages, each then
// invisible for the visibility timeout with a new receipt handle; with
// WaitTimeSeconds it waits for one (long polling).
func (q *Queue) receive(w http.ResponseWriter, r *http.Request, max int, vis *int, wait int) {
	if max <= 0 {
		max = 1
	}
	if max > 10 || wait < 0 || wait > 20 {
		writeErr(w, http.StatusBadRequest, "InvalidParameterValue", "MaxNumberOfMessages 1-10, WaitTimeSeconds 0-20")
		return
	}
	q.mu.Lock()
	visibility := q.visibility
	q.mu.Unlock()
	if vis != nil {
		visibility = time.Duration(*vis) * time.Second
	}
	deadline := time.Now().Add(time.Duration(wait) * time.Second)
	for {
		q.mu.Lock()
		now := time.Now()
		var out []map[string]any
		var next time.Time
		for _, m := range q.msgs {
			if len(out) == max {
				break
			}
			if m.visibleAt.After(now) {
				if next.IsZero() || m.visibleAt.Before(next) {
					next = m.visibleAt
				}
				continue
			}
			m.receives++
			m.visibleAt = now.Add(visibility)
			m.receiptHandle = newID() + "#" + m.id
			out = append(out, map[string]any{
				"MessageId": m.id, "ReceiptHandle": m.receiptHandle, "MD5OfBody": md5Hex(m.body), "Body": m.body,
				"Attributes": map[string]string{
					"ApproximateReceiveCount":          strconv.Itoa(m.receives),
					"SentTimestamp":                    strconv.FormatInt(m.sentAt.UnixMilli(), 10),
					"ApproximateFirstReceiveTimestamp": strconv.FormatInt(now.UnixMilli(), 10),
				},
			})
		}
		wake := q.wake
		q.mu.Unlock()
		if len(out) > 0 || !now.Before(deadline) {
			writeJSON(w, map[string]any{"Messages": out})
			return
		}
		timer := time.NewTimer(time.Until(deadline))
		if !next.IsZero() && next.Before(deadline) {
			timer.Reset(time.Until(next))
		}
		select {
		case <-wake:
		case <-timer.C:
		case <-r.Context().Done():
			timer.Stop()
			return
		}
		timer.Stop()
	}
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/x-amz-json-1.0")
	json.NewEncoder(w).Encode(v)
}

// writeErr answers an error the way SQS's JSON protocol does: __type is the
// shape id, x-amzn-query-error the query-compatible code.
func writeErr(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/x-amz-json-1.0")
	w.Header().Set("x-amzn-query-error", code+";Sender")
	w.WriteHeader(status)
	fmt.Fprintf(w, `{"__type":"com.amazonaws.sqs#%s","message":%q}`, code, msg)
}
