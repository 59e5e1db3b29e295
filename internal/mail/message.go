package mail

import (
	"errors"
	"fmt"
	"strings"
	"unicode"
)

// Message is one rendered email, ready for a sender. From is set by the
// mailer; Render fills the rest.
type Message struct {
	From, To, ReplyTo, Subject, Text, HTML string
	// Headers are extra headers (X-Entity-Ref-ID, X-Linkpipe-Mail-ID). Names
	// and values are printable ASCII without CR or LF.
	Headers map[string]string
	// Tags name the email for the provider's delivery feedback (SES
	// EmailTags): TagMail, TagLink, TagPractice. Values are ids.
	Tags map[string]string
}

// Tags the mailer sets on every email; SES returns them in its delivery,
// bounce and complaint events.
const (
	TagMail     = "linkpipe_mail"
	TagLink     = "linkpipe_link"
	TagPractice = "linkpipe_practice"
)

// Headers Render sets on every message.
const (
	// HeaderEntityRefID carries the mail id. Gmail does not thread together
	// messages whose X-Entity-Ref-ID differs, so two links (or two
	// appointments) never end up in one conversation where the stale link
	// is the one the client clicks.
	HeaderEntityRefID = "X-Entity-Ref-ID"
	// HeaderMailID also carries the mail id, for support: it names the
	// mail.cmd.<id> / mail.done.<id> subjects and the link's events.
	HeaderMailID = "X-Linkpipe-Mail-ID"
	// HeaderKind carries the mail kind (signin, document, ...).
	HeaderKind = "X-Linkpipe-Kind"
)

// Sentinel errors of senders. A Sender wraps every error it returns in
// exactly one of them, so the mailer knows whether to retry:
//
//   - ErrPermanent: retrying the same message cannot succeed: the provider
//     refused this one email (the address is invalid, the message was
//     rejected) or the message is malformed. The mailer records a
//     permanent failure (links.<id>.failed, permanent=true, and
//     deadletter.mail) and stops.
//   - ErrThrottled: the provider asked us to slow down (HTTP 429,
//     TooManyRequests, Throttling*). It wraps ErrTransient.
//   - ErrRefused: the provider refuses every send until an operator acts
//     (sending paused, account suspended, MAIL FROM domain not verified,
//     configuration set missing, credentials refused: HTTP 401/403). It
//     wraps ErrTransient: the email is retried, and the mailer reports
//     itself not ready while every send is refused.
//   - ErrTransient: a temporary failure (5xx, a network error, a timeout).
//     The mailer retries later with backoff.
//
// An error wrapping none of them is treated as transient by the mailer (the
// safe side: a retry costs a delay, a wrong "permanent" costs an email).
var (
	ErrPermanent = errors.New("mail: permanent send failure")
	ErrTransient = errors.New("mail: transient send failure")
	ErrThrottled = fmt.Errorf("mail: throttled: %w", ErrTransient)
	ErrRefused   = fmt.Errorf("mail: refused until an operator acts: %w", ErrTransient)
)

// IsPermanent reports whether err says retrying cannot help.
func IsPermanent(err error) bool { return errors.Is(err, ErrPermanent) }

// Render errors.
var (
	// ErrUnknownKind: the command's kind is not one this build renders.
	ErrUnknownKind = errors.New("mail: unknown mail kind")
	// ErrBadCommand: the command lacks what its kind needs (recipient,
	// link URL, document, appointment).
	ErrBadCommand = errors.New("mail: incomplete mail command")
)

// HeaderValue makes s safe as a header value: control characters (CR and LF
// above all, which would let a value inject headers) become spaces, runs of
// spaces collapse, and the result is trimmed. Event validation already
// refuses control characters; this is the second fence.
func HeaderValue(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	space := false
	for _, r := range s {
		if unicode.IsControl(r) || unicode.IsSpace(r) || r == '\u2028' || r == '\u2029' {
			space = true
			continue
		}
		if space && b.Len() > 0 {
			b.WriteByte(' ')
		}
		space = false
		b.WriteRune(r)
	}
	return b.String()
}

// ASCIIHeaderValue is HeaderValue restricted to printable ASCII (what custom
// headers of SES and most providers accept); other characters are dropped.
func ASCIIHeaderValue(s string) string {
	s = HeaderValue(s)
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 0x20 && c < 0x7f {
			b.WriteByte(c)
		}
	}
	return b.String()
}

// HeaderName reports whether s is a valid header field name: printable
// ASCII (33-126) except the colon, at most 126 characters.
func HeaderName(s string) bool {
	if s == "" || len(s) > 126 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 33 || c > 126 || c == ':' {
			return false
		}
	}
	return true
}

// Sanitize applies HeaderValue to every header-bound field of m (From, To,
// Reply-To, Subject) and drops extra headers with invalid names; senders
// call it before handing m to the provider.
func (m *Message) Sanitize() {
	m.From = HeaderValue(m.From)
	m.To = HeaderValue(m.To)
	m.ReplyTo = HeaderValue(m.ReplyTo)
	m.Subject = HeaderValue(m.Subject)
	for k, v := range m.Headers {
		if !HeaderName(k) {
			delete(m.Headers, k)
			continue
		}
		m.Headers[k] = ASCIIHeaderValue(v)
	}
}
