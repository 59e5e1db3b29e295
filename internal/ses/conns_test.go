package ses_test

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sesv2"

	"github.com/linkpipe/linkpipe/internal/ses"
)

// dials sends rounds of n concurrent emails to a server that holds each
// request a moment, and returns how many connections the client opened.
func dials(t *testing.T, n, rounds int, opts ...func(*sesv2.Options)) int64 {
	t.Helper()
	var conns atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(20 * time.Millisecond)
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"MessageId":"m"}`)
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	s, err := ses.New(ctx(t), append([]func(*sesv2.Options){func(o *sesv2.Options) {
		o.Region, o.BaseEndpoint = "us-east-1", aws.String(srv.URL)
		o.Credentials = credentials.NewStaticCredentialsProvider("AKIDTEST", "secret-test", "")
	}}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	for range rounds {
		var wg sync.WaitGroup
		for range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := s.Send(ctx(t), message()); err != nil {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
	}
	return conns.Load()
}

// TestIdleConnsKeepsAConnectionPerEmailInFlight: the SDK's client keeps 10
// idle connections per host, so 30 emails in flight dial again for two
// thirds of them each round; with IdleConns(30) the first round's
// connections serve every later one.
func TestIdleConnsKeepsAConnectionPerEmailInFlight(t *testing.T) {
	isolate(t)
	const n, rounds = 30, 4
	d0 := dials(t, n, rounds)
	t.Logf("SDK default: %d connections", d0)
	if d0 <= n {
		t.Logf("SDK default: %d connections (expected more than %d; the SDK may have changed its default)", d0, n)
	}
	if d := dials(t, n, rounds, ses.IdleConns(n)); d > n {
		t.Fatalf("IdleConns(%d): %d connections for %d rounds of %d, want at most %d", n, d, rounds, n, n)
	}
}
