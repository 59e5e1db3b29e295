package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"flag"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/linkpipe/linkpipe/internal/bus/bustest"
	"github.com/linkpipe/linkpipe/internal/config"
	"github.com/linkpipe/linkpipe/internal/eventually"
	"github.com/linkpipe/linkpipe/internal/syncbuf"
	"github.com/linkpipe/linkpipe/internal/ticket"
	"github.com/linkpipe/linkpipe/internal/worker"
)

var (
	seed    = bytes.Repeat([]byte{5}, 32)
	oldSeed = bytes.Repeat([]byte{6}, 32)
)

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestHelpListsEverySetting(t *testing.T) {
	var out bytes.Buffer
	err := run(context.Background(), []string{"-h"}, env(nil), &out)
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("-h: %v", err)
	}
	for _, v := range config.RedeemerVars() {
		if !strings.Contains(out.String(), v.Env) || !strings.Contains(out.String(), "-"+v.Flag()) {
			t.Errorf("-h does not list %s:\n%s", v.Env, out.String())
		}
	}
}

func TestBadConfigurationStopsAtStart(t *testing.T) {
	good := map[string]string{
		"LINKPIPE_PORTAL_URL": "https://portal.example",
		"LINKPIPE_TICKET_KEY": base64.StdEncoding.EncodeToString(seed),
		"NATS_URL":            "nats://127.0.0.1:1",
	}
	for name, tc := range map[string]struct{ key, val string }{
		"portal missing":  {"LINKPIPE_PORTAL_URL", ""},
		"portal relative": {"LINKPIPE_PORTAL_URL", "/portal"},
		"ticket missing":  {"LINKPIPE_TICKET_KEY", ""},
		"ticket short":    {"LINKPIPE_TICKET_KEY", base64.StdEncoding.EncodeToString(seed[:16])},
		"nats url":        {"NATS_URL", "http://x"},
		"public url":      {"LINKPIPE_PUBLIC_URL", "links.example"},
		"http addr":       {"LINKPIPE_HTTP_ADDR", "8080"},
		"admin addr":      {"LINKPIPE_ADMIN_ADDR", "9090"},
		"ticket list":     {"LINKPIPE_TICKET_KEY", base64.StdEncoding.EncodeToString(seed) + ",nope"},
		"proxies":         {"LINKPIPE_TRUSTED_PROXIES", "10.0.0.0/99"},
	} {
		m := map[string]string{}
		for k, v := range good {
			m[k] = v
		}
		m[tc.key] = tc.val
		err := run(context.Background(), nil, env(m), io.Discard)
		if !errors.Is(err, worker.ErrConfig) || !strings.Contains(err.Error(), tc.key) {
			t.Errorf("%s: got %v, want a configuration error naming %s", name, err, tc.key)
		}
	}
}

func TestRunServesUntilCanceled(t *testing.T) {
	srv := bustest.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := &syncbuf.Buffer{}
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"-http-addr", "127.0.0.1:0", "-admin-addr", "127.0.0.1:0"}, env(map[string]string{
			"NATS_URL":            srv.URL,
			"LINKPIPE_DATA_DIR":   t.TempDir(),
			"LINKPIPE_PUBLIC_URL": "https://links.example",
			"LINKPIPE_PORTAL_URL": "https://portal.example",
			// A 4s drain keeps serving for 1s after turning not ready.
			"LINKPIPE_SHUTDOWN_TIMEOUT": "4s",
			// Two keys: the first signs, both are in the JWKS.
			"LINKPIPE_TICKET_KEY": base64.RawURLEncoding.EncodeToString(seed) + "," + base64.StdEncoding.EncodeToString(oldSeed),
		}), out)
	}()
	ready := regexp.MustCompile(`redeemer ready http=(\S+) admin=(\S+)`)
	var addr, adminAddr string
	deadline := time.Now().Add(30 * time.Second)
	for addr == "" {
		if m := ready.FindStringSubmatch(out.String()); m != nil {
			addr, adminAddr = m[1], m[2]
			break
		}
		select {
		case err := <-done:
			t.Fatalf("run returned before ready: %v", err)
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("not ready after 30s")
		}
	}
	getFrom := func(addr, path string) (int, string) {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	get := func(path string) (int, string) { return getFrom(addr, path) }
	for _, p := range []string{"/healthz", "/readyz"} {
		if code, body := get(p); code != 200 {
			t.Fatalf("%s: %d %s", p, code, body)
		}
	}
	// /metrics is on the admin address only.
	for _, p := range []string{"/healthz", "/readyz", "/metrics"} {
		if code, body := getFrom(adminAddr, p); code != 200 {
			t.Fatalf("admin %s: %d %s", p, code, body)
		}
	}
	if code, _ := get("/metrics"); code != http.StatusNotFound {
		t.Fatalf("public /metrics: %d, want 404", code)
	}
	// The support view is on the admin address only.
	if code, body := getFrom(adminAddr, "/support"); code != 200 || !strings.Contains(body, "Why can&#39;t my client get in?") {
		t.Fatalf("admin /support: %d %.200s", code, body)
	}
	if code, body := getFrom(adminAddr, "/support.json?link=Lnever"); code != http.StatusNotFound || !strings.Contains(body, "was ever issued") {
		t.Fatalf("admin /support.json of an unknown link: %d %.200s", code, body)
	}
	if code, _ := get("/support"); code != http.StatusNotFound {
		t.Fatalf("public /support: %d, want 404", code)
	}
	code, jwks := get("/.well-known/jwks.json")
	signer, _ := ticket.NewSigner(seed, "")
	old, _ := ticket.NewSigner(oldSeed, "")
	if code != 200 || !strings.Contains(jwks, `"kid":"`+signer.Kid()+`"`) || !strings.Contains(jwks, `"kid":"`+old.Kid()+`"`) {
		t.Fatalf("jwks %d %s (want kids %s, %s)", code, jwks, signer.Kid(), old.Kid())
	}
	if code, body := get("/l/not-a-token"); code != 404 || !strings.Contains(body, `content="not_found"`) {
		t.Fatalf("unknown link: %d\n%s", code, body)
	}
	// Stopping (SIGTERM): not ready at once, while the public address
	// still serves, so a load balancer takes the replica out first.
	cancel()
	eventually.True(t, 10*time.Second, func() bool { code, _ := get("/readyz"); return code == http.StatusServiceUnavailable },
		"/readyz to answer 503 once stopping")
	if code, _ := get("/healthz"); code != 200 {
		t.Errorf("/healthz while draining: %d, want 200", code)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("run did not return after cancel")
	}
}
