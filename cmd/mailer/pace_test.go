package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/linkpipe/linkpipe/internal/bus/bustest"
	"github.com/linkpipe/linkpipe/internal/mailer"
	"github.com/linkpipe/linkpipe/internal/ses/sestest"
)

// TestSendRateLimitOnMetrics: the mailer reads MaxSendRate from SES
// GetAccount (aws-ses-v2-local serves AWS_SES_ACCOUNT) and shows the limit
// in force on its admin /metrics; LINKPIPE_SES_MAX_RATE overrides it. The
// emails kept in flight follow the rate (14/s × 500 ms + 4 = 11), or
// LINKPIPE_MAIL_CONCURRENCY; with the sink, which has no rate, they are
// mailer.SinkConcurrency.
func TestSendRateLimitOnMetrics(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes; skipped in -short mode")
	}
	t.Setenv("AWS_SES_ACCOUNT", sestest.LocalAccount(14))
	local := sestest.StartLocal(t)
	srv := bustest.Start(t)
	env := append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(),
		"NATS_URL=" + srv.URL, "LINKPIPE_LINK_KEY=" + linkKey(), "LINKPIPE_MAIL_DRIVER=ses",
		"LINKPIPE_MAIL_FROM=links@acme.example", "LINKPIPE_ADMIN_ADDR=127.0.0.1:0",
		"LINKPIPE_PUBLIC_URL=https://links.example"}, local.Env()...)
	for _, c := range []struct {
		env  []string
		want []string
	}{
		{nil, []string{"linkpipe_ses_max_send_rate 14\n", "linkpipe_mailer_concurrency 11\n"}},
		{[]string{"LINKPIPE_SES_MAX_RATE=3.5"}, []string{"linkpipe_ses_max_send_rate 3.5\n", "linkpipe_mailer_concurrency 8\n"}},
		{[]string{"LINKPIPE_MAIL_CONCURRENCY=40"}, []string{"linkpipe_mailer_concurrency 40\n"}},
		{[]string{"LINKPIPE_MAIL_DRIVER=sink", "LINKPIPE_INBOX_ADDR=127.0.0.1:0"},
			[]string{fmt.Sprintf("linkpipe_mailer_concurrency %d\n", mailer.SinkConcurrency)}},
		{[]string{"LINKPIPE_MAIL_DRIVER=sink", "LINKPIPE_INBOX_ADDR=127.0.0.1:0", "LINKPIPE_MAIL_CONCURRENCY=3"},
			[]string{"linkpipe_mailer_concurrency 3\n"}},
	} {
		m := startChild(t, append(append(env, "LINKPIPE_DATA_DIR="+t.TempDir()), c.env...))
		admin, _, _ := strings.Cut(m.admin, " inbox=") // the sink's ready line names its inbox too
		resp, err := http.Get("http://" + admin + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, want := range c.want {
			if !strings.Contains(string(body), want) {
				t.Errorf("%v: /metrics lacks %q", c.env, want)
			}
		}
	}
}
