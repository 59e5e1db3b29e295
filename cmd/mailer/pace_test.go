package main

import (
	"io"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/linkpipe/linkpipe/internal/bus/bustest"
	"github.com/linkpipe/linkpipe/internal/ses/sestest"
)

// TestSendRateLimitOnMetrics: the mailer reads MaxSendRate from SES
// GetAccount (aws-ses-v2-local serves AWS_SES_ACCOUNT) and shows the limit
// in force on its admin /metrics; LINKPIPE_SES_MAX_RATE overrides it.
func TestSendRateLimitOnMetrics(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes; skipped in -short mode")
	}
	t.Setenv("AWS_SES_ACCOUNT", `{"DedicatedIpAutoWarmupEnabled":false,"Details":{"AdditionalContactEmailAddresses":[],`+
		`"ContactLanguage":"EN","MailType":"TRANSACTIONAL","ReviewDetails":{"CaseId":"c","Status":"GRANTED"},`+
		`"UseCaseDescription":"links","WebsiteURL":"https://clinic.example"},"EnforcementStatus":"HEALTHY",`+
		`"ProductionAccessEnabled":true,"SendingEnabled":true,`+
		`"SendQuota":{"Max24HourSend":50000,"MaxSendRate":14,"SentLast24Hours":0},`+
		`"SuppressionAttributes":{"SuppressedReasons":[]}}`)
	local := sestest.StartLocal(t)
	srv := bustest.Start(t)
	env := append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(),
		"NATS_URL=" + srv.URL, "LINKPIPE_LINK_KEY=" + linkKey(), "LINKPIPE_MAIL_DRIVER=ses",
		"LINKPIPE_MAIL_FROM=links@acme.example", "LINKPIPE_ADMIN_ADDR=127.0.0.1:0",
		"LINKPIPE_PUBLIC_URL=https://links.example"}, local.Env()...)
	for _, c := range []struct {
		env  []string
		want string
	}{
		{nil, "linkpipe_ses_max_send_rate 14\n"},
		{[]string{"LINKPIPE_SES_MAX_RATE=3.5"}, "linkpipe_ses_max_send_rate 3.5\n"},
	} {
		m := startChild(t, append(append(env, "LINKPIPE_DATA_DIR="+t.TempDir()), c.env...))
		resp, err := http.Get("http://" + m.admin + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(string(body), c.want) {
			t.Errorf("%v: /metrics lacks %q", c.env, c.want)
		}
	}
}
