package config_test

import (
	"bufio"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/linkpipe/linkpipe/internal/config"
)

// There is no Docker engine here, so this test is what keeps
// docker-compose.yml honest: every worker service builds a real command,
// sets only settings that binary reads (with valid values, also the
// defaults of ${VAR:-default} and the values deploy/cluster.env gives
// them), sets every required one, can be scaled (no fixed host port, no
// shared bbolt volume), has a healthcheck, and starts only after what it
// needs is healthy (or, for setup, done).
type composeService struct {
	Image    string   `yaml:"image"`
	Command  []string `yaml:"command"`
	Profiles []string `yaml:"profiles"`
	Build    *struct {
		Context string            `yaml:"context"`
		Target  string            `yaml:"target"`
		Args    map[string]string `yaml:"args"`
	} `yaml:"build"`
	Ports       []string          `yaml:"ports"`
	Volumes     []string          `yaml:"volumes"`
	Environment map[string]string `yaml:"environment"`
	Healthcheck *struct {
		Test []string `yaml:"test"`
	} `yaml:"healthcheck"`
	DependsOn       map[string]struct{ Condition string } `yaml:"depends_on"`
	StopGracePeriod string                                `yaml:"stop_grace_period"`
}

type composeFile struct {
	Services map[string]composeService `yaml:"services"`
}

var (
	required   = regexp.MustCompile(`^\$\{([A-Z_]+):\?[^}]+\}$`)
	defaulted  = regexp.MustCompile(`^\$\{([A-Z_]+):-([^}]*)\}$`)
	clusterEnv = filepath.Join("..", "..", "deploy", "cluster.env")
)

func readCompose(t *testing.T) composeFile {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "..", "docker-compose.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var cf composeFile
	if err := yaml.Unmarshal(raw, &cf); err != nil {
		t.Fatalf("docker-compose.yml does not parse: %v", err)
	}
	return cf
}

// envFile reads KEY=VALUE lines.
func envFile(t *testing.T, path string) map[string]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("%s: %q is not KEY=VALUE", path, line)
		}
		out[k] = v
	}
	return out
}

func TestDockerComposeMatchesConfiguration(t *testing.T) {
	root := filepath.Join("..", "..")
	cf := readCompose(t)
	cluster := envFile(t, clusterEnv)
	workers := map[string][]config.Var{
		"issuer":   config.IssuerVars(),
		"mailer":   config.MailerVars(),
		"redeemer": config.RedeemerVars(),
		"setup":    append(config.NATSVars(), config.Replicas),
	}
	for name, vars := range workers {
		svc, ok := cf.Services[name]
		if !ok {
			t.Errorf("service %s missing", name)
			continue
		}
		cmd := name
		if name == "setup" {
			cmd = "linkpipe"
		}
		if svc.Build == nil || svc.Build.Args["CMD"] != cmd {
			t.Errorf("%s: must build ./cmd/%s (build.args.CMD)", name, cmd)
		} else if _, err := os.Stat(filepath.Join(root, "cmd", svc.Build.Args["CMD"], "main.go")); err != nil {
			t.Errorf("%s: %v", name, err)
		}
		known := map[string]config.Var{}
		for _, v := range vars {
			known[v.Env] = v
		}
		check := func(k, val, from string) {
			if v := known[k]; v.Check != nil && val != "" {
				if err := v.Check(val); err != nil {
					t.Errorf("%s: %s=%q (%s) is invalid: %v", name, k, val, from, err)
				}
			}
		}
		for k, val := range svc.Environment {
			if _, ok := known[k]; !ok {
				t.Errorf("%s: sets %s, which the %s binary does not read", name, k, cmd)
				continue
			}
			if m := required.FindStringSubmatch(val); m != nil {
				if m[1] != k {
					t.Errorf("%s: %s takes its value from %s", name, k, m[1])
				}
				continue // a secret from the operator's environment
			}
			if m := defaulted.FindStringSubmatch(val); m != nil {
				check(k, m[2], "its default")
				if c, ok := cluster[m[1]]; ok {
					check(k, c, "deploy/cluster.env")
				}
				continue
			}
			check(k, val, "as set")
		}
		for _, v := range vars {
			if v.Required && svc.Environment[v.Env] == "" {
				t.Errorf("%s: required %s is not set", name, v.Env)
			}
		}
		nats := svc.Environment["NATS_URL"]
		if m := defaulted.FindStringSubmatch(nats); m == nil || !strings.Contains(m[2], "//nats:") ||
			!strings.Contains(cluster[m[1]], "//nats-1:") || !strings.Contains(cluster[m[1]], "//nats-3:") {
			t.Errorf("%s: NATS_URL %q: want the nats service by default and nats-1..3 with deploy/cluster.env", name, nats)
		}
		if m := defaulted.FindStringSubmatch(svc.Environment["LINKPIPE_REPLICAS"]); m == nil || m[2] != "1" || cluster[m[1]] != "3" {
			t.Errorf("%s: LINKPIPE_REPLICAS %q: want 1, and 3 with deploy/cluster.env", name, svc.Environment["LINKPIPE_REPLICAS"])
		}
		for _, vol := range svc.Volumes {
			if strings.HasSuffix(strings.SplitN(vol, ":", 3)[1], svc.Environment["LINKPIPE_DATA_DIR"]) {
				t.Errorf("%s: a shared volume on the data dir would make replicas share one bbolt file", name)
			}
		}
		if name == "setup" {
			continue
		}
		// Workers: healthy when ready, started after setup is done,
		// stopped with time to drain.
		if svc.Healthcheck == nil || !slices.Contains(svc.Healthcheck.Test, "/linkpipe") ||
			!strings.Contains(strings.Join(svc.Healthcheck.Test, " "), "probe http://127.0.0.1:9090/readyz") {
			t.Errorf("%s: want the healthcheck /linkpipe probe http://127.0.0.1:9090/readyz, got %+v", name, svc.Healthcheck)
		}
		if svc.Environment["LINKPIPE_ADMIN_ADDR"] != ":9090" {
			t.Errorf("%s: the healthcheck probes :9090, LINKPIPE_ADMIN_ADDR is %q", name, svc.Environment["LINKPIPE_ADMIN_ADDR"])
		}
		if svc.DependsOn["setup"].Condition != "service_completed_successfully" {
			t.Errorf("%s: must wait for setup to complete", name)
		}
		if svc.StopGracePeriod == "" {
			t.Errorf("%s: no stop_grace_period (Docker's 10s is shorter than the drain)", name)
		}
	}
	// Nothing waits on a bare start: every dependency has a condition.
	for name, svc := range cf.Services {
		for dep, d := range svc.DependsOn {
			if _, ok := cf.Services[dep]; !ok {
				t.Errorf("%s depends on unknown service %s", name, dep)
			}
			if d.Condition != "service_healthy" && d.Condition != "service_completed_successfully" {
				t.Errorf("%s: depends_on %s without condition service_healthy", name, dep)
			}
			if d.Condition == "service_healthy" && cf.Services[dep].Healthcheck == nil && cf.Services[dep].Build == nil {
				t.Errorf("%s waits for %s to be healthy, which has no healthcheck", name, dep)
			}
		}
	}
	// Scalable workers publish no fixed host port; the balancer does.
	for _, name := range []string{"issuer", "mailer", "redeemer"} {
		if len(cf.Services[name].Ports) > 0 {
			t.Errorf("%s: fixed host ports prevent --scale %s=3", name, name)
		}
	}
	lb := cf.Services["lb"]
	if !strings.HasPrefix(lb.Image, "nginx:") || len(lb.Ports) == 0 || lb.DependsOn["redeemer"].Condition != "service_healthy" {
		t.Errorf("lb: want nginx publishing the redeemers' port once they are healthy, got %+v", lb)
	}
	nginx, err := os.ReadFile(filepath.Join(root, "deploy", "nginx", "redeemer.conf"))
	if err != nil || !strings.Contains(string(nginx), "server redeemer:8080 resolve") {
		t.Errorf("deploy/nginx/redeemer.conf must balance over every redeemer replica: %v", err)
	}
	// The mailer talks to the SES emulator, with the ses driver.
	m := cf.Services["mailer"].Environment
	if m["LINKPIPE_MAIL_DRIVER"] != "ses" || !strings.Contains(m["AWS_ENDPOINT_URL_SESV2"], "//ses:") || m["LINKPIPE_MAIL_FROM"] == "" {
		t.Errorf("mailer must send through the ses service with a From address: %v", m)
	}
	// NATS: the official image at the tested version, JetStream from its
	// configuration file, its store on a volume, healthy when JetStream is.
	for _, name := range []string{"nats", "nats-1", "nats-2", "nats-3"} {
		n := cf.Services[name]
		if n.Image != "nats:2.15.2-alpine" || !slices.Contains(n.Command, "-c") || len(n.Volumes) < 2 ||
			n.Healthcheck == nil || !strings.Contains(strings.Join(n.Healthcheck.Test, " "), "js-enabled-only=true") {
			t.Errorf("%s: want nats:2.15.2-alpine with a config file, a volume and a JetStream healthcheck, got %+v", name, n)
		}
		if (name == "nats") == slices.Contains(n.Profiles, "cluster") {
			t.Errorf("%s: profiles %v", name, n.Profiles)
		}
	}
	single, err := os.ReadFile(filepath.Join(root, "deploy", "nats", "single.conf"))
	if err != nil || !regexp.MustCompile(`(?m)^\s*sync_interval:\s*always`).Match(single) || !strings.Contains(string(single), "store_dir: /data") {
		t.Errorf("deploy/nats/single.conf: a single server must fsync every write (sync_interval: always): %v", err)
	}
	clusterConf, err := os.ReadFile(filepath.Join(root, "deploy", "nats", "cluster.conf"))
	for _, want := range []string{"nats-route://nats-1:6222", "nats-route://nats-2:6222", "nats-route://nats-3:6222", "server_name: $SERVER_NAME"} {
		if err != nil || !strings.Contains(string(clusterConf), want) {
			t.Errorf("deploy/nats/cluster.conf lacks %q (%v)", want, err)
		}
	}
	// The SES emulator is built from the repo's Dockerfile stage: nothing
	// is downloaded when it starts.
	s := cf.Services["ses"]
	if s.Build == nil || s.Build.Target != "ses" || s.Image != "" || strings.Contains(strings.Join(s.Command, " "), "npx") {
		t.Errorf("ses: want the Dockerfile's ses stage, got %+v", s)
	}
	df, err := os.ReadFile(filepath.Join(root, "Dockerfile"))
	if err != nil || !regexp.MustCompile(`(?m)^FROM node:\S+ AS ses$`).Match(df) || !strings.Contains(string(df), "npm ci") ||
		!strings.Contains(string(df), "aws-ses-v2-local/dist/cli.js") || !strings.Contains(string(df), "/out/linkpipe /linkpipe") {
		t.Errorf("Dockerfile: want an ses stage installing testdeps with npm ci, and /linkpipe in every image: %v", err)
	}
}

// The build context leaves out the dev keys (data/) and other secrets.
func TestDockerIgnoreKeepsSecretsOut(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", "..", ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(raw), "\n")
	for _, want := range []string{"data/", "**/data/", "*.key", "*.creds", ".env", ".git/"} {
		if !slices.Contains(lines, want) {
			t.Errorf(".dockerignore lacks %s", want)
		}
	}
}
