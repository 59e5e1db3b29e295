package config_test

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"strings"
	"testing"

	"github.com/linkpipe/linkpipe/internal/config"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestParseDefaultsEnvAndFlags(t *testing.T) {
	var out bytes.Buffer
	v, err := config.Parse("x", []string{"-http-addr", "127.0.0.1:1"}, env(map[string]string{
		"LINKPIPE_HTTP_ADDR": ":2", "LINKPIPE_PUBLIC_URL": "https://links.example"}), &out,
		config.NATSURL, config.HTTPAddr, config.PublicURL)
	if err != nil {
		t.Fatal(err)
	}
	if v.Get(config.NATSURL) != "nats://127.0.0.1:4222" || v.Get(config.HTTPAddr) != "127.0.0.1:1" || v.Get(config.PublicURL) != "https://links.example" {
		t.Fatalf("%v", v)
	}
}

func TestParseNamesTheBadSetting(t *testing.T) {
	cases := map[string]map[string]string{
		"LINKPIPE_LINK_KEY":    {},
		"LINKPIPE_PUBLIC_URL":  {"LINKPIPE_LINK_KEY": "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=", "LINKPIPE_PUBLIC_URL": "ftp://x"},
		"NATS_URL":             {"LINKPIPE_LINK_KEY": "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=", "NATS_URL": "http://x"},
		"LINKPIPE_MAIL_DRIVER": {"LINKPIPE_LINK_KEY": "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=", "LINKPIPE_MAIL_DRIVER": "smtp"},
	}
	for name, e := range cases {
		_, err := config.Parse("x", nil, env(e), &bytes.Buffer{}, config.LinkKey, config.PublicURL, config.NATSURL, config.MailDriver)
		if err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%s: got %v", name, err)
		}
	}
}

func TestHelpListsEverySetting(t *testing.T) {
	var out bytes.Buffer
	vars := []config.Var{config.NATSURL, config.DataDir, config.LinkKey, config.PublicURL, config.HTTPAddr,
		config.AdminAddr, config.MailFrom, config.MailDriver, config.PortalURL, config.TicketKey,
		config.AWSRegion, config.AWSEndpoint, config.AWSAccessKey, config.AWSSecretKey}
	_, err := config.Parse("x", []string{"-h"}, env(nil), &out, vars...)
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatal(err)
	}
	for _, v := range vars {
		if !strings.Contains(out.String(), v.Env) || !strings.Contains(out.String(), "-"+v.Flag()) {
			t.Errorf("-h does not list %s", v.Env)
		}
	}
}

func TestTicketKeysAndTrustedProxies(t *testing.T) {
	a, b := strings.Repeat("A", 43), "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
	seeds, err := config.DecodeSeeds(a + ", " + b)
	if err != nil || len(seeds) != 2 || len(seeds[0]) != 32 || string(seeds[1]) != "0123456789abcdef0123456789abcdef" {
		t.Fatalf("seeds %q %v", seeds, err)
	}
	for _, bad := range []string{"", a + ",", a + ",short", "x"} {
		if _, err := config.DecodeSeeds(bad); err == nil {
			t.Errorf("DecodeSeeds(%q) passed", bad)
		}
	}
	ps, err := config.ParsePrefixes("10.0.0.0/8, 192.0.2.7 ,2001:db8::/32")
	if err != nil || len(ps) != 3 || ps[1].String() != "192.0.2.7/32" || ps[2].String() != "2001:db8::/32" {
		t.Fatalf("prefixes %v %v", ps, err)
	}
	if ps, err := config.ParsePrefixes(""); err != nil || len(ps) != 0 {
		t.Fatalf("empty: %v %v", ps, err)
	}
	for _, bad := range []string{"10.0.0.0/33", "proxy.example", "10.0.0.0/8,"} {
		if _, err := config.Parse("x", nil, env(map[string]string{config.TrustedProxies.Env: bad}), &bytes.Buffer{}, config.TrustedProxies); err == nil ||
			!strings.Contains(err.Error(), config.TrustedProxies.Env) {
			t.Errorf("%q: %v", bad, err)
		}
	}
	for _, v := range []config.Var{config.AdminAddr, config.TrustedProxies} {
		found := false
		for _, r := range config.RedeemerVars() {
			found = found || r.Env == v.Env
		}
		if !found {
			t.Errorf("the redeemer does not read %s", v.Env)
		}
	}
}

// The NATS credentials and TLS settings name files; one that cannot be
// read stops the process at start naming the setting, and a bad NATS_URL
// is named without its password.
func TestNATSSettings(t *testing.T) {
	dir := t.TempDir()
	good := dir + "/file.pem"
	if err := os.WriteFile(good, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, v := range config.NATSVars()[1:] {
		if _, err := config.Parse("x", nil, env(map[string]string{v.Env: good}), &bytes.Buffer{}, config.NATSVars()...); err != nil {
			t.Errorf("%s readable: %v", v.Env, err)
		}
		for _, bad := range []string{dir + "/missing", dir} {
			_, err := config.Parse("x", nil, env(map[string]string{v.Env: bad}), &bytes.Buffer{}, config.NATSVars()...)
			if err == nil || !strings.Contains(err.Error(), v.Env) {
				t.Errorf("%s=%s: got %v", v.Env, bad, err)
			}
		}
	}
	_, err := config.Parse("x", nil, env(map[string]string{"NATS_URL": "http://alice:s3cret@nats:4222"}), &bytes.Buffer{}, config.NATSVars()...)
	if err == nil || !strings.Contains(err.Error(), "NATS_URL") || strings.Contains(err.Error(), "s3cret") {
		t.Errorf("bad NATS_URL: %v", err)
	}
	var out bytes.Buffer
	if _, err := config.Parse("x", []string{"-h"}, env(nil), &out, config.IssuerVars()...); !errors.Is(err, flag.ErrHelp) {
		t.Fatal(err)
	}
	for _, v := range config.NATSVars() {
		if !strings.Contains(out.String(), v.Env) || !strings.Contains(out.String(), "-"+v.Flag()) {
			t.Errorf("-h does not list %s", v.Env)
		}
	}
}
