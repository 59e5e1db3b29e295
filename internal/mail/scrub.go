package mail

import "regexp"

// Placeholders Scrub puts where it removed something.
const (
	ScrubbedAddress = "[address]"
	ScrubbedToken   = "[token]"
)

var (
	// addressPattern is anything around an "@" (or its URL encoding %40)
	// up to a separator: wider than RFC 5322 on purpose, so that no
	// address a provider quotes, however odd, survives.
	addressPattern = regexp.MustCompile(`[^\s@<>()\[\]{},;:"\x60\\]*(@|%40)[^\s@<>()\[\]{},;:"'\x60\\]+`)
	// tokenPattern is a link token (kid "." the 43-character base64url
	// HMAC) or anything that looks like one.
	tokenPattern = regexp.MustCompile(`[A-Za-z0-9_-]*\.[A-Za-z0-9_-]{43,}`)
)

// Scrub returns s with every email address replaced by ScrubbedAddress and
// every link token by ScrubbedToken. It is for text linkpipe does not
// write itself — chiefly a mail provider's error message, which may quote
// the recipient ("... failed the check in region US-EAST-1: pat@example.com")
// — before it becomes an error, a log line or the reason of a lifecycle
// event: none of those may carry an address or a token. It errs on the side
// of removing too much.
func Scrub(s string) string {
	s = addressPattern.ReplaceAllLiteralString(s, ScrubbedAddress)
	return tokenPattern.ReplaceAllLiteralString(s, ScrubbedToken)
}

// ScrubError returns err with its text scrubbed (Scrub) and its chain kept:
// errors.Is and errors.As still find ErrPermanent, ErrThrottled,
// ErrTransient and the provider's own error types. nil stays nil.
func ScrubError(err error) error {
	if err == nil {
		return nil
	}
	return &scrubbedError{err: err, text: Scrub(err.Error())}
}

type scrubbedError struct {
	err  error
	text string
}

func (e *scrubbedError) Error() string { return e.text }
func (e *scrubbedError) Unwrap() error { return e.err }
