package devstack_test

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/linkpipe/linkpipe/events"
	"github.com/linkpipe/linkpipe/internal/bus"
	"github.com/linkpipe/linkpipe/internal/devstack"
)

func startDev(t *testing.T, cfg devstack.Config) *devstack.Stack {
	t.Helper()
	cfg.DataDir, cfg.HTTPAddr, cfg.NATSPort = t.TempDir(), "127.0.0.1:0", -1
	st, err := devstack.Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// request sends method to http://<st.Addr><path> with the given Host
// header (empty: the address) and other headers.
func request(t *testing.T, st *devstack.Stack, method, host, path string, body io.Reader, hdr map[string]string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+st.Addr+path, body)
	if err != nil {
		t.Fatal(err)
	}
	if host != "" {
		req.Host = host
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := noRedirect().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// A page on another site cannot make the visitor's browser publish a
// sign-in request through the /dev form.
func TestDevFormRefusesCrossOriginPost(t *testing.T) {
	st := startDev(t, devstack.Config{})
	form := url.Values{"client": {"c-csrf"}, "email": {"victim@example.com"}}.Encode()
	for name, hdr := range map[string]map[string]string{
		"Origin":         {"Origin": "https://evil.example"},
		"Sec-Fetch-Site": {"Sec-Fetch-Site": "cross-site"},
		"both":           {"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"},
	} {
		hdr["Content-Type"] = "application/x-www-form-urlencoded"
		if code, body := request(t, st, http.MethodPost, "", "/dev/signin", strings.NewReader(form), hdr); code != http.StatusForbidden {
			t.Errorf("%s: cross-origin POST /dev/signin: %d, want 403: %s", name, code, body)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	subjects, err := bus.NewReader(st.JetStream(), bus.StreamActions).Subjects(ctx, events.SubjectSigninRequested)
	if err != nil {
		t.Fatal(err)
	}
	if len(subjects) != 0 {
		t.Fatalf("a cross-origin POST published: %v", subjects)
	}
	// The page's own form still works.
	hdr := map[string]string{"Content-Type": "application/x-www-form-urlencoded", "Origin": st.URL, "Sec-Fetch-Site": "same-origin"}
	if code, body := request(t, st, http.MethodPost, "", "/dev/signin", strings.NewReader(form), hdr); code != http.StatusSeeOther {
		t.Fatalf("same-origin POST /dev/signin: %d, want 303: %s", code, body)
	}
}

// DNS rebinding: a page on attacker.example whose name now resolves to
// 127.0.0.1 reads what it fetches from "its own" origin. The dev stack
// answers only requests addressed to a loopback name or the configured
// public host.
func TestDevStackRefusesForeignHost(t *testing.T) {
	st := startDev(t, devstack.Config{})
	_, port, _ := strings.Cut(st.Addr, ":")
	for _, path := range []string{"/inbox.json", "/inbox", "/dev", "/metrics", "/.well-known/jwks.json"} {
		for _, host := range []string{"attacker.example", "attacker.example:" + port, "127.0.0.1.attacker.example:" + port, "localhost.attacker.example"} {
			code, body := request(t, st, http.MethodGet, host, path, nil, nil)
			if code != http.StatusMisdirectedRequest || strings.Contains(body, "<") {
				t.Errorf("GET %s with Host %s: %d %q, want 421 with a plain message", path, host, code, body)
			}
		}
		for _, host := range []string{"", "localhost:" + port, "LOCALHOST", "127.0.0.1", "[::1]:" + port, "127.0.0.2:" + port} {
			if code, body := request(t, st, http.MethodGet, host, path, nil, nil); code != http.StatusOK {
				t.Errorf("GET %s with Host %q: %d, want 200: %s", path, host, code, body)
			}
		}
	}
	// Refused before anything else: a cross-origin POST from a foreign
	// host gets the same answer.
	if code, _ := request(t, st, http.MethodPost, "attacker.example", "/dev/signin", nil, nil); code != http.StatusMisdirectedRequest {
		t.Errorf("POST /dev/signin with a foreign Host: %d", code)
	}

	// An operator who serves the dev stack under a name says so.
	pub := startDev(t, devstack.Config{PublicURL: "http://devbox.example:8080"})
	if code, body := request(t, pub, http.MethodGet, "devbox.example:8080", "/inbox.json", nil, nil); code != http.StatusOK {
		t.Errorf("the configured public host: %d %s", code, body)
	}
	if code, _ := request(t, pub, http.MethodGet, "attacker.example", "/inbox.json", nil, nil); code != http.StatusMisdirectedRequest {
		t.Errorf("another host with a public URL set: %d", code)
	}
}
