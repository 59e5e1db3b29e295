package worker_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/linkpipe/linkpipe/events"
	"github.com/linkpipe/linkpipe/internal/bus"
	"github.com/linkpipe/linkpipe/internal/bus/bustest"
	"github.com/linkpipe/linkpipe/internal/config"
	"github.com/linkpipe/linkpipe/internal/eventually"
	"github.com/linkpipe/linkpipe/internal/issuer"
	"github.com/linkpipe/linkpipe/internal/link"
	"github.com/linkpipe/linkpipe/internal/worker"
)

// scrape returns the value of the first series of /metrics at addr whose
// line matches name{labels...} (labels a regexp fragment), and whether
// there was one.
func scrape(t *testing.T, addr, series string) (float64, bool) {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	m := regexp.MustCompile(`(?m)^` + series + ` ([0-9.e+-]+)$`).FindSubmatch(body)
	if m == nil {
		return 0, false
	}
	v, err := strconv.ParseFloat(string(m[1]), 64)
	if err != nil {
		t.Fatal(err)
	}
	return v, true
}

// An issuer process with a backlog of actions nobody consumes exports the
// issuer consumer's lag on its admin address, and the dead letters by
// source; the figures follow the stream on the next read.
func TestBacklogMetricsOnTheAdminAddress(t *testing.T) {
	srv := bustest.Start(t)
	p, err := worker.Start(t.Context(), worker.Settings{Name: "issuer", Values: values(srv.URL, t.TempDir()),
		BacklogInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	db, err := p.OpenStore("issuer", issuer.Buckets()...)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := worker.NewIssuer(p.Deps("issuer"), db, link.NewKeyring("k1", bytes.Repeat([]byte{1}, 32))); err != nil {
		t.Fatal(err)
	}
	adm, err := p.Serve(config.AdminAddr, p.AdminMux())
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const backlog = 25
	for i := range backlog {
		if _, err := events.Publish(ctx, p.JS, &events.SigninRequested{
			Envelope: events.Envelope{EventID: fmt.Sprintf("evt-%d", i), PracticeID: "acme"},
			Client:   events.Client{ID: fmt.Sprintf("c-%d", i), Email: "pat@example.com", Name: "Pat"},
		}); err != nil {
			t.Fatal(err)
		}
	}
	for range 3 {
		if _, err := p.JS.PublishMsg(ctx, &nats.Msg{Subject: bus.DeadLetterPrefix + "mail", Data: []byte("{}")}); err != nil {
			t.Fatal(err)
		}
	}
	pending := `linkpipe_consumer_pending\{consumer="issuer",stream="ACTIONS"\}`
	eventually.True(t, 10*time.Second, func() bool { v, _ := scrape(t, adm.Addr(), pending); return v == backlog },
		"linkpipe_consumer_pending of issuer to show the backlog")
	eventually.True(t, 10*time.Second, func() bool {
		v, _ := scrape(t, adm.Addr(), `linkpipe_deadletter_messages\{source="mail"\}`)
		return v == 3
	}, "3 dead letters from mail")
	for _, s := range []string{
		`linkpipe_consumer_ack_pending\{consumer="issuer",stream="ACTIONS"\}`,
		`linkpipe_consumer_redelivered\{consumer="issuer",stream="ACTIONS"\}`,
		`linkpipe_deadletter_messages\{source="actions"\}`,
	} {
		if v, ok := scrape(t, adm.Addr(), s); !ok || v != 0 {
			t.Errorf("%s = %v (present %v), want 0", s, v, ok)
		}
	}
	if _, ok := scrape(t, adm.Addr(), `linkpipe_consumer_pending\{consumer="mailer",stream="MAIL"\}`); ok {
		t.Error("an issuer process exports the mailer's consumer")
	}

	// Take 10 without acking: they move from pending to ack pending.
	cons, err := p.JS.Consumer(ctx, bus.StreamActions, bus.ConsumerIssuer)
	if err != nil {
		t.Fatal(err)
	}
	batch, err := cons.Fetch(10)
	if err != nil {
		t.Fatal(err)
	}
	for range batch.Messages() {
	}
	eventually.True(t, 10*time.Second, func() bool {
		v, _ := scrape(t, adm.Addr(), pending)
		a, _ := scrape(t, adm.Addr(), `linkpipe_consumer_ack_pending\{consumer="issuer",stream="ACTIONS"\}`)
		return v == backlog-10 && a == 10
	}, "15 pending and 10 ack pending")
}
