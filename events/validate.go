package events

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/mail"
	"net/url"
	"regexp"
	"strings"
	"time"
	_ "time/tzdata" // appointment time zones must resolve in minimal images
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/language"
)

// MaxEventSize is the largest action, in bytes, linkpipe accepts.
const MaxEventSize = 64 << 10

// Limits on free-text fields.
const (
	MaxEmailLen    = 254
	MaxNameLen     = 200
	MaxTitleLen    = 300
	MaxReturnToLen = 2048
	MaxReasonLen   = 500
	MaxReminders   = 5
	// MaxReminderOffset is the longest reminder offset before an appointment.
	MaxReminderOffset = 30 * 24 * time.Hour
)

// Policy bounds of DESIGN.md's link rules.
const (
	MinSigninTTL       = 10 * time.Minute
	MaxSigninTTL       = 72 * time.Hour
	MinDocumentTTL     = time.Hour
	MaxDocumentTTL     = 7 * 24 * time.Hour
	MinTelehealthGrace = 0
	MaxTelehealthGrace = 2 * time.Hour
)

// Sentinel errors of Decode. Validation problems are *FieldError values.
var (
	// ErrTooLarge: the message is larger than MaxEventSize.
	ErrTooLarge = errors.New("event too large")
	// ErrMalformed: the message is not one JSON object of the action's shape
	// (syntax error, wrong type, unknown field, trailing data).
	ErrMalformed = errors.New("malformed event")
	// ErrUnknownSubject: no action is published on that subject.
	ErrUnknownSubject = errors.New("unknown action subject")
	// ErrUnsupportedVersion: the version field names a format this build
	// does not understand.
	ErrUnsupportedVersion = errors.New("unsupported event version")
)

// FieldError says which field of an action is wrong and why.
type FieldError struct {
	Field  string // JSON path, e.g. "client.email"
	Reason string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Reason }

func fieldErr(field, format string, args ...any) error {
	return &FieldError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

// ValidID reports whether s is a contract id: [A-Za-z0-9_-]{1,64}. (A
// loop, not a regular expression: every message of every worker checks a
// few ids.)
func ValidID(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

func checkID(field, s string) error {
	if s == "" {
		return fieldErr(field, "required")
	}
	if !ValidID(s) {
		return fieldErr(field, "must match [A-Za-z0-9_-]{1,64}")
	}
	return nil
}

// checkText refuses control characters (CR and LF above all: they would let
// a value inject mail headers) and invalid UTF-8.
func checkText(field, s string, maxLen int, required bool) error {
	if s == "" {
		if required {
			return fieldErr(field, "required")
		}
		return nil
	}
	if len(s) > maxLen {
		return fieldErr(field, "longer than %d bytes", maxLen)
	}
	if !utf8.ValidString(s) {
		return fieldErr(field, "not valid UTF-8")
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return fieldErr(field, "contains a control character (CR, LF, tab, ...)")
		}
	}
	return nil
}

// CheckEmail validates a bare email address (no display name, no CRLF).
func CheckEmail(field, s string) error {
	if s == "" {
		return fieldErr(field, "required")
	}
	if err := checkText(field, s, MaxEmailLen, true); err != nil {
		return err
	}
	a, err := mail.ParseAddress(s)
	if err != nil || a.Address != s || a.Name != "" || !strings.Contains(s[strings.LastIndexByte(s, '@')+1:], ".") {
		return fieldErr(field, "not a valid email address")
	}
	return nil
}

// CheckReturnTo validates a portal path: relative, starting with a single
// "/", no scheme or host, so it can never redirect off the portal.
func CheckReturnTo(field, s string) error {
	if s == "" {
		return nil
	}
	if err := checkText(field, s, MaxReturnToLen, false); err != nil {
		return err
	}
	if !strings.HasPrefix(s, "/") || strings.HasPrefix(s, "//") || strings.ContainsAny(s, "\\") {
		return fieldErr(field, "must be a path on the portal starting with a single /")
	}
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "" || u.Host != "" || u.User != nil {
		return fieldErr(field, "must be a path on the portal starting with a single /")
	}
	return nil
}

// MaxLocaleLen and MaxLogoURLLen bound the branding fields.
const (
	MaxLocaleLen  = 35
	MaxLogoURLLen = 2048
)

var (
	localeRe = regexp.MustCompile(`^[A-Za-z]{2,8}(-[A-Za-z0-9]{1,8})*$`)
	colorRe  = regexp.MustCompile(`^#[0-9A-Fa-f]{6}$`)
	// logoHostRe is a DNS name with an optional port: pages put the logo's
	// origin in their Content-Security-Policy, where ";" or "," would add
	// or change a directive.
	logoHostRe = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?(:[0-9]{1,5})?$`)
)

// CheckLocale validates a BCP 47 language tag ("es", "es-MX"); empty is
// allowed (no preference). A well-formed tag linkpipe does not speak is
// accepted: its emails and pages fall back to the next choice.
func CheckLocale(field, s string) error {
	if s == "" {
		return nil
	}
	if len(s) > MaxLocaleLen || !localeRe.MatchString(s) {
		return fieldErr(field, "not a BCP 47 language tag such as \"es\" or \"es-MX\"")
	}
	if _, err := language.Parse(s); err != nil {
		return fieldErr(field, "not a BCP 47 language tag such as \"es\" or \"es-MX\": %v", err)
	}
	return nil
}

// CheckLogoURL validates a logo's address: absolute https on a DNS name,
// no user information, no spaces; empty means no logo.
func CheckLogoURL(field, s string) error {
	if s == "" {
		return nil
	}
	if err := checkText(field, s, MaxLogoURLLen, false); err != nil {
		return err
	}
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil || strings.ContainsAny(s, " \t\\") || !strings.HasPrefix(s, "https://") || !logoHostRe.MatchString(u.Host) {
		return fieldErr(field, "must be an absolute https URL (https://...) without user information or spaces")
	}
	return nil
}

// CheckAccentColor validates a colour written #rrggbb; empty means the
// default.
func CheckAccentColor(field, s string) error {
	if s == "" || colorRe.MatchString(s) {
		return nil
	}
	return fieldErr(field, "must be a colour written #rrggbb, such as \"#1f6f5c\"")
}

// CheckPortalURL validates a portal base URL: absolute http(s), no query.
func CheckPortalURL(field, s string) error {
	if s == "" {
		return nil
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return fieldErr(field, "must be an absolute http(s) URL without query or fragment")
	}
	return nil
}

// ParseDurationBounded parses a Go duration and checks min <= d <= max.
func ParseDurationBounded(field, s string, min, max time.Duration) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fieldErr(field, "not a duration like \"24h\" or \"90m\"")
	}
	if d < min || d > max {
		return 0, fieldErr(field, "%s is outside the bounds %s to %s", s, min, max)
	}
	return d, nil
}

// ParseReminders parses reminder offsets ("72h", "24h").
func ParseReminders(field string, offsets []string) ([]time.Duration, error) {
	if len(offsets) > MaxReminders {
		return nil, fieldErr(field, "at most %d reminders", MaxReminders)
	}
	out := make([]time.Duration, 0, len(offsets))
	for i, s := range offsets {
		d, err := ParseDurationBounded(fmt.Sprintf("%s[%d]", field, i), s, time.Minute, MaxReminderOffset)
		if err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, nil
}

func (e *Envelope) validate() error {
	if e.Version != 0 && e.Version != 1 {
		return fmt.Errorf("%w: version %d (this build understands 1)", ErrUnsupportedVersion, e.Version)
	}
	if err := checkID("event_id", e.EventID); err != nil {
		return err
	}
	return checkID("practice_id", e.PracticeID)
}

func (c *Client) validateFull(field string) error {
	if err := checkID(field+".id", c.ID); err != nil {
		return err
	}
	if err := CheckEmail(field+".email", c.Email); err != nil {
		return err
	}
	if err := checkText(field+".name", c.Name, MaxNameLen, false); err != nil {
		return err
	}
	return CheckLocale(field+".locale", c.Locale)
}

func checkTimezone(field, tz string) error {
	if tz == "" {
		return fieldErr(field, "required (an IANA zone such as \"America/Chicago\")")
	}
	if err := checkText(field, tz, 64, true); err != nil {
		return err
	}
	if _, err := time.LoadLocation(tz); err != nil {
		return fieldErr(field, "unknown time zone %q", tz)
	}
	return nil
}

func (a *Appointment) validateWindow(field string) error {
	if a.StartsAt == nil {
		return fieldErr(field+".starts_at", "required")
	}
	if a.EndsAt == nil {
		return fieldErr(field+".ends_at", "required")
	}
	if !a.EndsAt.After(*a.StartsAt) {
		return fieldErr(field+".ends_at", "must be after starts_at")
	}
	if a.EndsAt.Sub(*a.StartsAt) > 24*time.Hour {
		return fieldErr(field+".ends_at", "an appointment lasts at most 24h")
	}
	return nil
}

// Validate implements Action.
func (a *SigninRequested) Validate() error {
	if err := a.envelope().validate(); err != nil {
		return err
	}
	if err := a.Client.validateFull("client"); err != nil {
		return err
	}
	return CheckReturnTo("return_to", a.ReturnTo)
}

// Validate implements Action.
func (a *DocumentShared) Validate() error {
	if err := a.envelope().validate(); err != nil {
		return err
	}
	if err := a.Client.validateFull("client"); err != nil {
		return err
	}
	if err := checkID("document.id", a.Document.ID); err != nil {
		return err
	}
	if err := checkText("document.title", a.Document.Title, MaxTitleLen, true); err != nil {
		return err
	}
	return checkID("share_id", a.ShareID)
}

// Validate implements Action.
func (a *AppointmentScheduled) Validate() error {
	if err := a.envelope().validate(); err != nil {
		return err
	}
	if err := a.Client.validateFull("client"); err != nil {
		return err
	}
	if err := checkID("appointment.id", a.Appointment.ID); err != nil {
		return err
	}
	if err := a.Appointment.validateWindow("appointment"); err != nil {
		return err
	}
	if err := checkText("appointment.clinician_name", a.Appointment.ClinicianName, MaxNameLen, false); err != nil {
		return err
	}
	if err := checkTimezone("appointment.timezone", a.Appointment.Timezone); err != nil {
		return err
	}
	_, err := ParseReminders("reminders", a.Reminders)
	return err
}

func validateApptOnly(e *Envelope, a *Appointment, window bool) error {
	if err := e.validate(); err != nil {
		return err
	}
	if err := checkID("appointment.id", a.ID); err != nil {
		return err
	}
	if window {
		return a.validateWindow("appointment")
	}
	return nil
}

// Validate implements Action.
func (a *AppointmentRescheduled) Validate() error {
	return validateApptOnly(&a.Envelope, &a.Appointment, true)
}

// Validate implements Action.
func (a *AppointmentCanceled) Validate() error {
	return validateApptOnly(&a.Envelope, &a.Appointment, false)
}

// Validate implements Action.
func (a *AppointmentReminder) Validate() error {
	return validateApptOnly(&a.Envelope, &a.Appointment, false)
}

// Validate implements Action.
func (a *ClientLinksRevoked) Validate() error {
	if err := a.envelope().validate(); err != nil {
		return err
	}
	if err := checkID("client.id", a.Client.ID); err != nil {
		return err
	}
	if err := CheckLocale("client.locale", a.Client.Locale); err != nil {
		return err
	}
	return checkText("reason", a.Reason, MaxReasonLen, false)
}

// Validate implements Action.
func (a *RenewalRequested) Validate() error {
	if err := a.envelope().validate(); err != nil {
		return err
	}
	return checkID("link_id", a.LinkID)
}

// Validate implements Action.
func (a *AddressUnsuppressed) Validate() error {
	if err := a.envelope().validate(); err != nil {
		return err
	}
	return CheckEmail("email", a.Email)
}

// Validate implements Action; policy values outside the bounds are refused.
func (a *PracticeUpdated) Validate() error {
	if err := a.envelope().validate(); err != nil {
		return err
	}
	if err := checkText("practice.name", a.Practice.Name, MaxNameLen, false); err != nil {
		return err
	}
	if a.Practice.ReplyTo != "" {
		if err := CheckEmail("practice.reply_to", a.Practice.ReplyTo); err != nil {
			return err
		}
	}
	if err := CheckPortalURL("practice.portal_url", a.Practice.PortalURL); err != nil {
		return err
	}
	if a.Practice.Timezone != "" {
		if err := checkTimezone("practice.timezone", a.Practice.Timezone); err != nil {
			return err
		}
	}
	if err := CheckLocale("practice.locale", a.Practice.Locale); err != nil {
		return err
	}
	if err := CheckLogoURL("practice.logo_url", a.Practice.LogoURL); err != nil {
		return err
	}
	if err := CheckAccentColor("practice.accent_color", a.Practice.AccentColor); err != nil {
		return err
	}
	if p := a.Policy; p != nil {
		if p.SigninTTL != "" {
			if _, err := ParseDurationBounded("policy.signin_ttl", p.SigninTTL, MinSigninTTL, MaxSigninTTL); err != nil {
				return err
			}
		}
		if p.DocumentTTL != "" {
			if _, err := ParseDurationBounded("policy.document_ttl", p.DocumentTTL, MinDocumentTTL, MaxDocumentTTL); err != nil {
				return err
			}
		}
		if p.TelehealthGrace != "" {
			if _, err := ParseDurationBounded("policy.telehealth_grace", p.TelehealthGrace, MinTelehealthGrace, MaxTelehealthGrace); err != nil {
				return err
			}
		}
		if _, err := ParseReminders("policy.reminders", p.Reminders); err != nil {
			return err
		}
	}
	return nil
}

// Decode parses and validates the action published on subject. Its error is
// ErrTooLarge, ErrMalformed, ErrUnknownSubject, ErrUnsupportedVersion (all
// wrapped with detail) or a *FieldError.
func Decode(subject string, data []byte) (Action, error) {
	if len(data) > MaxEventSize {
		return nil, fmt.Errorf("%w: %d bytes, the limit is %d", ErrTooLarge, len(data), MaxEventSize)
	}
	a := newAction(subject)
	if a == nil {
		return nil, fmt.Errorf("%w: %q", ErrUnknownSubject, subject)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(a); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("%w: data after the JSON object", ErrMalformed)
	}
	if err := a.Validate(); err != nil {
		return nil, err
	}
	return a, nil
}
