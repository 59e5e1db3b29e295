package feedback

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/linkpipe/linkpipe/events"
	"github.com/linkpipe/linkpipe/internal/mail"
)

// Errors of parse, wrapped with detail; both dead-letter the message.
var (
	// ErrMalformed: the message is not an SNS notification of an SES event
	// nor an SES event (not JSON, no eventType or notificationType, no
	// mail object).
	ErrMalformed = errors.New("feedback: malformed message")
	// ErrUnknown: a well-formed message of a kind linkpipe does not use
	// (an SNS subscription confirmation, an SES Reject or Rendering
	// Failure event, an event type this build does not know).
	ErrUnknown = errors.New("feedback: unknown event")
	// ErrUnmatched: the event names no email linkpipe sent (neither its
	// mail.messageId nor its linkpipe_mail tag is on record).
	ErrUnmatched = errors.New("feedback: event matches no email linkpipe sent")
)

// Kinds of SES event (eventType, or notificationType in identity
// notifications).
const (
	kindDelivery  = "Delivery"
	kindBounce    = "Bounce"
	kindComplaint = "Complaint"
)

// ignored are the event types an SES configuration set may also publish
// that say nothing linkpipe records: acknowledged and counted, not
// dead-lettered. (Open and Click need tracking linkpipe never turns on;
// Send repeats what SendEmail already said; DeliveryDelay is followed by
// a Delivery or a Bounce.)
var ignored = map[string]bool{"Send": true, "Open": true, "Click": true, "DeliveryDelay": true,
	"Subscription": true, "AmazonSnsSubscriptionSucceeded": true}

// snsEnvelope is an SNS notification as SNS delivers it to SQS (without
// raw message delivery).
type snsEnvelope struct {
	Type      string  `json:"Type"`
	MessageID string  `json:"MessageId"`
	TopicArn  string  `json:"TopicArn"`
	Message   *string `json:"Message"`
}

// sesEvent is the part of an SES event (event publishing) or notification
// (identity notifications) linkpipe reads.
type sesEvent struct {
	EventType        string `json:"eventType"`
	NotificationType string `json:"notificationType"`
	Mail             *struct {
		MessageID   string              `json:"messageId"`
		Timestamp   time.Time           `json:"timestamp"`
		Destination []string            `json:"destination"`
		Tags        map[string][]string `json:"tags"`
	} `json:"mail"`
	Bounce *struct {
		BounceType        string `json:"bounceType"`
		BounceSubType     string `json:"bounceSubType"`
		BouncedRecipients []struct {
			EmailAddress   string `json:"emailAddress"`
			Status         string `json:"status"`
			DiagnosticCode string `json:"diagnosticCode"`
		} `json:"bouncedRecipients"`
		Timestamp  time.Time `json:"timestamp"`
		FeedbackID string    `json:"feedbackId"`
	} `json:"bounce"`
	Complaint *struct {
		ComplainedRecipients []struct {
			EmailAddress string `json:"emailAddress"`
		} `json:"complainedRecipients"`
		ComplaintFeedbackType string    `json:"complaintFeedbackType"`
		Timestamp             time.Time `json:"timestamp"`
		FeedbackID            string    `json:"feedbackId"`
	} `json:"complaint"`
	Delivery *struct {
		Timestamp    time.Time `json:"timestamp"`
		SMTPResponse string    `json:"smtpResponse"`
	} `json:"delivery"`
}

// kind is the event's type, whichever form it came in.
func (e *sesEvent) kind() string {
	if e.EventType != "" {
		return e.EventType
	}
	return e.NotificationType
}

// mailTag returns the linkpipe_mail tag (event publishing only).
func (e *sesEvent) mailTag() string {
	if v := e.Mail.Tags[mail.TagMail]; len(v) == 1 && events.ValidID(v[0]) {
		return v[0]
	}
	return ""
}

// parse reads a queue message: an SNS notification whose Message is the
// SES event JSON, or (raw message delivery) the SES event JSON itself.
func parse(body []byte) (*sesEvent, error) {
	var env snsEnvelope
	if err := json.Unmarshal(body, &env); err != nil {
		return nil, fmt.Errorf("%w: not JSON: %v", ErrMalformed, err)
	}
	if env.Type != "" && env.Message != nil {
		if env.Type != "Notification" {
			return nil, fmt.Errorf("%w: SNS message of type %q", ErrUnknown, clip(env.Type))
		}
		body = []byte(*env.Message)
	}
	var e sesEvent
	if err := json.Unmarshal(body, &e); err != nil {
		return nil, fmt.Errorf("%w: the SES event is not JSON: %v", ErrMalformed, err)
	}
	k := e.kind()
	switch {
	case k == "":
		return nil, fmt.Errorf("%w: neither eventType nor notificationType", ErrMalformed)
	case ignored[k]:
		return &e, nil
	case k != kindDelivery && k != kindBounce && k != kindComplaint:
		return nil, fmt.Errorf("%w: SES event type %q", ErrUnknown, clip(k))
	case e.Mail == nil || (e.Mail.MessageID == "" && e.mailTag() == ""):
		return nil, fmt.Errorf("%w: %s without mail.messageId", ErrMalformed, k)
	case k == kindBounce && e.Bounce == nil, k == kindComplaint && e.Complaint == nil:
		return nil, fmt.Errorf("%w: %s without its %s object", ErrMalformed, k, strings.ToLower(k))
	}
	return &e, nil
}

// bounceReason maps SES's bounceType to a bounced event's reason.
func bounceReason(t string) string {
	switch t {
	case "Permanent":
		return events.BouncePermanent
	case "Transient":
		return events.BounceTransient
	}
	return events.BounceUndetermined
}

// bounceDetail is the bounce subtype and the first diagnostic, scrubbed of
// addresses ("NoEmail: smtp; 550 5.1.1 user unknown").
func (e *sesEvent) bounceDetail() string {
	b := e.Bounce
	d := b.BounceSubType
	for _, r := range b.BouncedRecipients {
		if r.DiagnosticCode != "" {
			d += ": " + r.DiagnosticCode
			break
		}
	}
	return detail(d)
}

// detail makes provider text safe for an event: one line, no address, no
// control character, bounded.
func detail(s string) string {
	return truncate(mail.HeaderValue(mail.Scrub(s)), events.MaxReasonLen)
}

// truncate cuts s to at most n bytes without splitting a UTF-8 sequence.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// clip bounds untrusted text quoted in a dead-letter reason.
func clip(s string) string {
	return truncate(mail.HeaderValue(s), 64)
}
