package config_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/linkpipe/linkpipe/internal/config"
)

// There is no Docker engine here, so this test is what keeps
// docker-compose.yml honest: every worker service builds a real command,
// sets only settings that binary reads, sets every required one, and can be
// scaled (no fixed host port, no shared bbolt volume).
type composeFile struct {
	Services map[string]struct {
		Image   string   `yaml:"image"`
		Command []string `yaml:"command"`
		Build   *struct {
			Context string            `yaml:"context"`
			Args    map[string]string `yaml:"args"`
		} `yaml:"build"`
		Ports       []string          `yaml:"ports"`
		Volumes     []string          `yaml:"volumes"`
		Environment map[string]string `yaml:"environment"`
	} `yaml:"services"`
}

func TestDockerComposeMatchesConfiguration(t *testing.T) {
	root := filepath.Join("..", "..")
	raw, err := os.ReadFile(filepath.Join(root, "docker-compose.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var cf composeFile
	if err := yaml.Unmarshal(raw, &cf); err != nil {
		t.Fatalf("docker-compose.yml does not parse: %v", err)
	}
	workers := map[string][]config.Var{
		"issuer":   config.IssuerVars(),
		"mailer":   config.MailerVars(),
		"redeemer": config.RedeemerVars(),
	}
	interp := regexp.MustCompile(`^\$\{([A-Z_]+):\?[^}]+\}$`)
	for name, vars := range workers {
		svc, ok := cf.Services[name]
		if !ok {
			t.Errorf("service %s missing", name)
			continue
		}
		if svc.Build == nil || svc.Build.Args["CMD"] != name {
			t.Errorf("%s: must build ./cmd/%s (build.args.CMD)", name, name)
		} else if _, err := os.Stat(filepath.Join(root, "cmd", svc.Build.Args["CMD"], "main.go")); err != nil {
			t.Errorf("%s: %v", name, err)
		}
		known := map[string]config.Var{}
		for _, v := range vars {
			known[v.Env] = v
		}
		for k, val := range svc.Environment {
			v, ok := known[k]
			if !ok {
				t.Errorf("%s: sets %s, which the %s binary does not read", name, k, name)
				continue
			}
			if m := interp.FindStringSubmatch(val); m != nil {
				if m[1] != k {
					t.Errorf("%s: %s takes its value from %s", name, k, m[1])
				}
				continue // a secret from the operator's environment
			}
			if v.Check != nil && val != "" {
				if err := v.Check(val); err != nil {
					t.Errorf("%s: %s=%q is invalid: %v", name, k, val, err)
				}
			}
		}
		for _, v := range vars {
			if v.Required && svc.Environment[v.Env] == "" {
				t.Errorf("%s: required %s is not set", name, v.Env)
			}
		}
		if nats := svc.Environment["NATS_URL"]; !strings.Contains(nats, "//nats:") {
			t.Errorf("%s: NATS_URL %q does not point at the nats service", name, nats)
		}
		for _, vol := range svc.Volumes {
			if strings.HasSuffix(strings.SplitN(vol, ":", 3)[1], svc.Environment["LINKPIPE_DATA_DIR"]) {
				t.Errorf("%s: a shared volume on the data dir would make replicas share one bbolt file", name)
			}
		}
	}
	// Scalable workers publish no fixed host port.
	for _, name := range []string{"issuer", "mailer"} {
		if len(cf.Services[name].Ports) > 0 {
			t.Errorf("%s: fixed host ports prevent --scale %s=3", name, name)
		}
	}
	// The mailer talks to the SES emulator, with the ses driver.
	m := cf.Services["mailer"].Environment
	if m["LINKPIPE_MAIL_DRIVER"] != "ses" || !strings.Contains(m["AWS_ENDPOINT_URL_SESV2"], "//ses:") || m["LINKPIPE_MAIL_FROM"] == "" {
		t.Errorf("mailer must send through the ses service with a From address: %v", m)
	}
	// NATS: the official image, JetStream on, its store on a volume.
	n := cf.Services["nats"]
	if !strings.HasPrefix(n.Image, "nats:") || !containsAll(n.Command, "-js", "-sd") || len(n.Volumes) == 0 {
		t.Errorf("nats: want the official image with -js and -sd on a volume, got %+v", n)
	}
	if s := cf.Services["ses"]; !strings.Contains(strings.Join(s.Command, " "), "aws-ses-v2-local") {
		t.Errorf("ses: want aws-ses-v2-local, got %v", s.Command)
	}
}

func containsAll(have []string, want ...string) bool {
	for _, w := range want {
		found := false
		for _, h := range have {
			found = found || h == w
		}
		if !found {
			return false
		}
	}
	return true
}
