package worker_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/linkpipe/linkpipe/internal/bus"
	"github.com/linkpipe/linkpipe/internal/bus/bustest"
	"github.com/linkpipe/linkpipe/internal/config"
	"github.com/linkpipe/linkpipe/internal/worker"
)

// Credentials that cannot work stop the process at start, exit status 2,
// naming the setting.
func TestBadNATSCredentialsNameTheSetting(t *testing.T) {
	dir := t.TempDir()
	junk := filepath.Join(dir, "junk")
	if err := os.WriteFile(junk, []byte("not a seed, not a PEM\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		set  map[string]string
		want string
	}{
		{map[string]string{config.NATSNKey.Env: junk}, config.NATSNKey.Env},
		{map[string]string{config.NATSTLSCA.Env: junk}, config.NATSTLSCA.Env},
		{map[string]string{config.NATSTLSCert.Env: junk}, config.NATSTLSKey.Env},
		{map[string]string{config.NATSTLSCert.Env: junk, config.NATSTLSKey.Env: junk}, config.NATSTLSCert.Env},
		{map[string]string{config.NATSCreds.Env: junk, config.NATSNKey.Env: junk}, config.NATSCreds.Env},
	} {
		vals := values("nats://127.0.0.1:1", t.TempDir())
		for k, v := range c.set {
			vals[k] = v
		}
		_, err := worker.Start(t.Context(), worker.Settings{Name: "tester", Values: vals, StartupTimeout: time.Second})
		if worker.ExitCode(err) != worker.ExitConfig || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: %v (exit %d), want exit 2 naming %s", c.set, err, worker.ExitCode(err), c.want)
		}
	}
}

// A password in NATS_URL shows neither in the logs nor in the error of a
// worker that cannot reach its server.
func TestPasswordNeverLogged(t *testing.T) {
	var logs bytes.Buffer
	_, err := worker.Start(t.Context(), worker.Settings{Name: "tester",
		Values: values("nats://alice:s3cret@127.0.0.1:1,nats://t0ken@127.0.0.1:2", t.TempDir()), LogOutput: &logs,
		StartupTimeout: 1500 * time.Millisecond})
	if err == nil {
		t.Fatal("started without a server")
	}
	for _, secret := range []string{"s3cret", "t0ken"} {
		if strings.Contains(err.Error(), secret) || strings.Contains(logs.String(), secret) {
			t.Errorf("%q shown: err %v\nlogs:\n%s", secret, err, logs.String())
		}
	}
}

// A worker started with another LINKPIPE_REPLICAS than the streams have
// starts, logs each difference, and rescales nothing.
func TestStartLeavesExistingStreamsAsTheyAre(t *testing.T) {
	srv := bustest.Start(t)
	// An operator kept dead letters for one hour (linkpipe configures 30 days).
	_, js := srv.Connect(t)
	dl, err := js.Stream(t.Context(), bus.StreamDeadLetter)
	if err != nil {
		t.Fatal(err)
	}
	dlc := dl.CachedInfo().Config
	dlc.MaxAge = time.Hour
	if _, err := js.UpdateStream(t.Context(), dlc); err != nil {
		t.Fatal(err)
	}
	vals := values(srv.URL, t.TempDir())
	vals[config.Replicas.Env] = "3"
	var logs bytes.Buffer
	p, err := worker.Start(t.Context(), worker.Settings{Name: "tester", Values: vals, LogOutput: &logs})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if !strings.Contains(logs.String(), `"field":"num_replicas","want":"3","have":"1"`) {
		t.Errorf("no difference logged:\n%s", logs.String())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := p.JS.Stream(ctx, bus.StreamScopes)
	if err != nil {
		t.Fatal(err)
	}
	if r := s.CachedInfo().Config.Replicas; r != 1 {
		t.Errorf("SCOPES rescaled to %d replicas", r)
	}
	if !strings.Contains(logs.String(), `"stream":"DEADLETTER","field":"max_age","want":"720h0m0s","have":"1h0m0s"`) {
		t.Errorf("no max_age difference logged:\n%s", logs.String())
	}
	dl, err = p.JS.Stream(ctx, bus.StreamDeadLetter)
	if err != nil {
		t.Fatal(err)
	}
	if got := dl.CachedInfo().Config.MaxAge; got != time.Hour {
		t.Errorf("DEADLETTER max age changed to %v", got)
	}
}
