package sestest

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/sesv2"
	"golang.org/x/time/rate"
)

// Limited is an SES v2 endpoint that enforces a sending rate the way SES
// does: a token bucket of Rate sends/s holding Burst (default a quarter
// second's worth, at least 2: SES tolerates short bursts, not sustained
// excess); a SendEmail beyond it answers Throttled (429
// TooManyRequestsException, "Maximum sending rate exceeded."). It accepts
// every other SendEmail without looking at it, after Latency, and answers
// GetAccount with MaxSendRate = Rate. It counts calls, not emails.
type Limited struct {
	URL string

	bucket  *rate.Limiter
	latency time.Duration

	mu                         sync.Mutex
	calls, accepted, throttled int
	first, last                time.Time
}

// LimitedConfig shapes a Limited.
type LimitedConfig struct {
	Rate    float64
	Burst   int
	Latency time.Duration
}

// NewLimited starts a Limited that closes with the test.
func NewLimited(t testing.TB, c LimitedConfig) *Limited {
	t.Helper()
	if c.Burst <= 0 {
		c.Burst = max(2, int(c.Rate/4))
	}
	l := &Limited{bucket: rate.NewLimiter(rate.Limit(c.Rate), c.Burst), latency: c.Latency}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { l.serve(w, r, c.Rate) }))
	t.Cleanup(srv.Close)
	l.URL = srv.URL
	return l
}

// Options points an SES client at the stand-in.
func (l *Limited) Options() func(*sesv2.Options) { return options(l.URL) }

// Counts are what a Limited answered so far.
type Counts struct {
	Calls, Accepted, Throttled int
	// First and Last are when the first and the last email was accepted.
	First, Last time.Time
}

// Counts returns the counts so far.
func (l *Limited) Counts() Counts {
	l.mu.Lock()
	defer l.mu.Unlock()
	return Counts{Calls: l.calls, Accepted: l.accepted, Throttled: l.throttled, First: l.first, Last: l.last}
}

func (l *Limited) serve(w http.ResponseWriter, r *http.Request, maxRate float64) {
	switch {
	case r.Method == http.MethodGet && r.URL.Path == "/v2/email/account":
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"SendQuota":{"Max24HourSend":1000000,"MaxSendRate":%s,"SentLast24Hours":0},"SendingEnabled":true,"ProductionAccessEnabled":true}`,
			strconv.FormatFloat(maxRate, 'f', -1, 64))
		return
	case r.Method != http.MethodPost || r.URL.Path != "/v2/email/outbound-emails":
		http.Error(w, `{"message":"unknown operation"}`, http.StatusNotFound)
		return
	}
	now := time.Now()
	ok := l.bucket.AllowN(now, 1)
	l.mu.Lock()
	l.calls++
	n := l.calls
	if ok {
		l.accepted++
		if l.first.IsZero() {
			l.first = now
		}
		l.last = now
	} else {
		l.throttled++
	}
	l.mu.Unlock()
	if l.latency > 0 {
		time.Sleep(l.latency)
	}
	if !ok {
		writeFault(w, Throttled)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, `{"MessageId":"limited-%d"}`, n)
}
