package deploy_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"gopkg.in/yaml.v3"

	"github.com/linkpipe/linkpipe/internal/bus"
	"github.com/linkpipe/linkpipe/internal/bus/bustest"
	"github.com/linkpipe/linkpipe/internal/config"
	"github.com/linkpipe/linkpipe/internal/issuer"
	"github.com/linkpipe/linkpipe/internal/link"
	"github.com/linkpipe/linkpipe/internal/mailer"
	"github.com/linkpipe/linkpipe/internal/worker"
)

// object is any Kubernetes object, decoded loosely.
type object struct {
	APIVersion string                `yaml:"apiVersion"`
	Kind       string                `yaml:"kind"`
	Metadata   struct{ Name string } `yaml:"metadata"`
	Spec       yaml.Node             `yaml:"spec"`
	Data       map[string]string     `yaml:"data"`
	file       string
}

type envVar struct {
	Name      string `yaml:"name"`
	Value     string `yaml:"value"`
	ValueFrom *struct {
		ConfigMapKeyRef *struct{ Name, Key string } `yaml:"configMapKeyRef"`
		SecretKeyRef    *struct{ Name, Key string } `yaml:"secretKeyRef"`
	} `yaml:"valueFrom"`
}

type probe struct {
	HTTPGet *struct {
		Path string `yaml:"path"`
		Port any    `yaml:"port"`
	} `yaml:"httpGet"`
}

type container struct {
	Name           string   `yaml:"name"`
	Image          string   `yaml:"image"`
	Args           []string `yaml:"args"`
	Env            []envVar `yaml:"env"`
	StartupProbe   *probe   `yaml:"startupProbe"`
	LivenessProbe  *probe   `yaml:"livenessProbe"`
	ReadinessProbe *probe   `yaml:"readinessProbe"`
	Resources      struct {
		Requests map[string]string `yaml:"requests"`
	} `yaml:"resources"`
}

type podTemplate struct {
	Metadata struct {
		Labels map[string]string `yaml:"labels"`
	} `yaml:"metadata"`
	Spec struct {
		TerminationGracePeriodSeconds *int        `yaml:"terminationGracePeriodSeconds"`
		Containers                    []container `yaml:"containers"`
	} `yaml:"spec"`
}

type workloadSpec struct {
	Template podTemplate `yaml:"template"`
	Selector struct {
		MatchLabels map[string]string `yaml:"matchLabels"`
	} `yaml:"selector"`
}

const k8sDir = "k8s"

// manifests decodes every document of every file kustomization.yaml
// lists, checking that it lists every file of the directory.
func manifests(t *testing.T) []object {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(k8sDir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var k struct {
		Kind      string   `yaml:"kind"`
		Namespace string   `yaml:"namespace"`
		Resources []string `yaml:"resources"`
	}
	if err := yaml.Unmarshal(raw, &k); err != nil {
		t.Fatalf("kustomization.yaml: %v", err)
	}
	if k.Kind != "Kustomization" || k.Namespace == "" {
		t.Errorf("kustomization.yaml: kind %q namespace %q", k.Kind, k.Namespace)
	}
	files, _ := filepath.Glob(filepath.Join(k8sDir, "*.yaml"))
	for _, f := range files {
		if b := filepath.Base(f); b != "kustomization.yaml" && !slices.Contains(k.Resources, b) {
			t.Errorf("%s is not listed in kustomization.yaml", b)
		}
	}
	var out []object
	for _, r := range k.Resources {
		data, err := os.ReadFile(filepath.Join(k8sDir, r))
		if err != nil {
			t.Fatalf("kustomization.yaml lists %s: %v", r, err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(data))
		for {
			var o object
			err := dec.Decode(&o)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", r, err)
			}
			if o.Kind == "" || o.APIVersion == "" || o.Metadata.Name == "" {
				t.Errorf("%s: a document without kind, apiVersion or name: %+v", r, o)
			}
			o.file = r
			out = append(out, o)
		}
	}
	return out
}

func find(objs []object, kind, name string) *object {
	for i := range objs {
		if objs[i].Kind == kind && objs[i].Metadata.Name == name {
			return &objs[i]
		}
	}
	return nil
}

func decodeSpec[T any](t *testing.T, o *object) T {
	t.Helper()
	var v T
	if err := o.Spec.Decode(&v); err != nil {
		t.Fatalf("%s %s (%s): %v", o.Kind, o.Metadata.Name, o.file, err)
	}
	return v
}

// varsOf are the settings the binary of an image reads.
func varsOf(image string) ([]config.Var, bool) {
	switch strings.TrimPrefix(image, "linkpipe/") {
	case "issuer":
		return config.IssuerVars(), true
	case "mailer":
		return config.MailerVars(), true
	case "redeemer":
		return config.RedeemerVars(), true
	case "linkpipe": // linkpipe setup
		return append(config.NATSVars(), config.Replicas), true
	}
	return nil, false
}

// checkEnv checks a container's environment against its binary's
// configuration: only settings it reads, every required one, valid values
// (also those from the ConfigMap they reference).
func checkEnv(t *testing.T, objs []object, where string, c container) map[string]string {
	t.Helper()
	vars, ok := varsOf(c.Image)
	if !ok {
		t.Errorf("%s: image %q is none of linkpipe's", where, c.Image)
		return nil
	}
	known := map[string]config.Var{}
	for _, v := range vars {
		known[v.Env] = v
	}
	resolved := map[string]string{}
	for _, e := range c.Env {
		v, ok := known[e.Name]
		if !ok {
			t.Errorf("%s: sets %s, which %s does not read", where, e.Name, c.Image)
			continue
		}
		val := e.Value
		switch {
		case e.ValueFrom != nil && e.ValueFrom.ConfigMapKeyRef != nil:
			ref := e.ValueFrom.ConfigMapKeyRef
			cm := find(objs, "ConfigMap", ref.Name)
			if cm == nil || cm.Data[ref.Key] == "" {
				t.Errorf("%s: %s from ConfigMap %s key %s, which does not exist", where, e.Name, ref.Name, ref.Key)
				continue
			}
			val = cm.Data[ref.Key]
		case e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil:
			if e.ValueFrom.SecretKeyRef.Key != e.Name {
				t.Errorf("%s: %s from secret key %s", where, e.Name, e.ValueFrom.SecretKeyRef.Key)
			}
			resolved[e.Name] = "(secret)"
			continue
		}
		if val == "" {
			t.Errorf("%s: %s is empty", where, e.Name)
			continue
		}
		if v.Check != nil {
			if err := v.Check(val); err != nil {
				t.Errorf("%s: %s=%q is invalid: %v", where, e.Name, val, err)
			}
		}
		resolved[e.Name] = val
	}
	for _, v := range vars {
		if v.Required && resolved[v.Env] == "" {
			t.Errorf("%s: required %s is not set", where, v.Env)
		}
	}
	return resolved
}

func TestKubernetesManifests(t *testing.T) {
	objs := manifests(t)
	workers := map[string]bool{"issuer": false, "mailer": false, "redeemer": false}
	var pdbs []object
	for _, o := range objs {
		if o.Kind == "PodDisruptionBudget" {
			pdbs = append(pdbs, o)
		}
	}
	for i := range objs {
		o := &objs[i]
		switch o.Kind {
		case "Deployment":
			spec := decodeSpec[workloadSpec](t, o)
			if _, ok := workers[o.Metadata.Name]; !ok {
				t.Errorf("Deployment %s is not a linkpipe worker", o.Metadata.Name)
				continue
			}
			workers[o.Metadata.Name] = true
			for k, v := range spec.Selector.MatchLabels {
				if spec.Template.Metadata.Labels[k] != v {
					t.Errorf("Deployment %s: selector %s=%s does not match its pods", o.Metadata.Name, k, v)
				}
			}
			if len(spec.Template.Spec.Containers) != 1 {
				t.Fatalf("Deployment %s: %d containers", o.Metadata.Name, len(spec.Template.Spec.Containers))
			}
			c := spec.Template.Spec.Containers[0]
			where := "Deployment " + o.Metadata.Name
			if c.Image != "linkpipe/"+o.Metadata.Name {
				t.Errorf("%s runs %s", where, c.Image)
			}
			env := checkEnv(t, objs, where, c)
			if env[config.AdminAddr.Env] != ":9090" {
				t.Errorf("%s: probes and scrapes use :9090, LINKPIPE_ADMIN_ADDR is %q", where, env[config.AdminAddr.Env])
			}
			if c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet == nil || c.ReadinessProbe.HTTPGet.Path != "/readyz" {
				t.Errorf("%s: readiness probe must GET /readyz", where)
			}
			if c.LivenessProbe == nil || c.LivenessProbe.HTTPGet == nil || c.LivenessProbe.HTTPGet.Path != "/healthz" {
				t.Errorf("%s: liveness probe must GET /healthz (never /readyz: a NATS outage must not restart every pod)", where)
			}
			if c.StartupProbe == nil {
				t.Errorf("%s: no startup probe (a worker waits up to a minute for NATS)", where)
			}
			if _, ok := env[config.DataDir.Env]; !ok {
				t.Errorf("%s: no LINKPIPE_DATA_DIR", where)
			}
			// The pod outlives the drain: SIGKILL only after it.
			drain, err := time.ParseDuration(env[config.ShutdownTimeout.Env])
			if err != nil {
				t.Errorf("%s: LINKPIPE_SHUTDOWN_TIMEOUT %q: %v", where, env[config.ShutdownTimeout.Env], err)
			}
			grace := spec.Template.Spec.TerminationGracePeriodSeconds
			if grace == nil {
				t.Errorf("%s: no terminationGracePeriodSeconds (Kubernetes' 30s default is not tied to the drain)", where)
			} else if time.Duration(*grace)*time.Second < drain+worker.MaxReadinessGrace+worker.FlushTimeout {
				t.Errorf("%s: terminationGracePeriodSeconds %d is shorter than the drain %v + 5s readiness grace + 5s flush", where, *grace, drain)
			}
			if o.Metadata.Name == "mailer" && drain < 40*time.Second {
				t.Errorf("mailer: a %v drain cuts SES sends (30s) short", drain)
			}
			covered := false
			for j := range pdbs {
				ps := decodeSpec[workloadSpec](t, &pdbs[j])
				match := len(ps.Selector.MatchLabels) > 0
				for k, v := range ps.Selector.MatchLabels {
					match = match && spec.Template.Metadata.Labels[k] == v
				}
				covered = covered || match
			}
			if !covered {
				t.Errorf("%s: no PodDisruptionBudget selects its pods", where)
			}
		case "Job":
			spec := decodeSpec[workloadSpec](t, o)
			for _, c := range spec.Template.Spec.Containers {
				env := checkEnv(t, objs, "Job "+o.Metadata.Name, c)
				if !slices.Equal(c.Args, []string{"setup"}) || env[config.Replicas.Env] != "3" {
					t.Errorf("Job %s: want linkpipe setup with 3 replicas, got args %v env %v", o.Metadata.Name, c.Args, env)
				}
			}
		}
	}
	for w, ok := range workers {
		if !ok {
			t.Errorf("no Deployment for the %s", w)
		}
	}
	nats := find(objs, "ConfigMap", "nats-cluster")
	if nats == nil || nats.Data["NATS_URL"] == "" || nats.Data["MONITORING_ENDPOINT"] == "" {
		t.Fatal("ConfigMap nats-cluster must name the NATS cluster (NATS_URL, MONITORING_ENDPOINT)")
	}

	// HPA: the redeemer on CPU, which it requests.
	hpa := find(objs, "HorizontalPodAutoscaler", "redeemer")
	if hpa == nil {
		t.Fatal("no HPA for the redeemer")
	}
	var hs struct {
		ScaleTargetRef struct{ Kind, Name string } `yaml:"scaleTargetRef"`
		MinReplicas    int                         `yaml:"minReplicas"`
		Metrics        []struct {
			Type     string
			Resource struct{ Name string }
		} `yaml:"metrics"`
	}
	if err := hpa.Spec.Decode(&hs); err != nil {
		t.Fatal(err)
	}
	if hs.ScaleTargetRef.Kind != "Deployment" || hs.ScaleTargetRef.Name != "redeemer" || hs.MinReplicas < 2 ||
		len(hs.Metrics) != 1 || hs.Metrics[0].Resource.Name != "cpu" {
		t.Errorf("HPA: want the redeemer Deployment on cpu from 2 replicas, got %+v", hs)
	}
	rd := decodeSpec[workloadSpec](t, find(objs, "Deployment", "redeemer"))
	if rd.Template.Spec.Containers[0].Resources.Requests["cpu"] == "" {
		t.Error("redeemer: an HPA on CPU needs a CPU request")
	}
}

// The KEDA triggers name the consumers linkpipe creates (bus) on the
// streams they belong to, and the worker that consumes each.
func TestKEDAScalesOnConsumersThatExist(t *testing.T) {
	objs := manifests(t)
	consumers := bus.ConsumerConfigs()
	// Which Deployment runs which consumer.
	runs := map[string]string{bus.ConsumerIssuer: "issuer", bus.ConsumerMailer: "mailer"}
	monitoring := find(objs, "ConfigMap", "nats-cluster").Data["MONITORING_ENDPOINT"]
	scaled := map[string]bool{}
	for i := range objs {
		o := &objs[i]
		if o.Kind != "ScaledObject" {
			continue
		}
		if o.APIVersion != "keda.sh/v1alpha1" {
			t.Errorf("ScaledObject %s: apiVersion %s", o.Metadata.Name, o.APIVersion)
		}
		var s struct {
			ScaleTargetRef  struct{ Name string } `yaml:"scaleTargetRef"`
			MinReplicaCount *int                  `yaml:"minReplicaCount"`
			MaxReplicaCount int                   `yaml:"maxReplicaCount"`
			Triggers        []struct {
				Type     string            `yaml:"type"`
				Metadata map[string]string `yaml:"metadata"`
			} `yaml:"triggers"`
		}
		if err := o.Spec.Decode(&s); err != nil {
			t.Fatal(err)
		}
		if find(objs, "Deployment", s.ScaleTargetRef.Name) == nil {
			t.Errorf("ScaledObject %s scales Deployment %s, which does not exist", o.Metadata.Name, s.ScaleTargetRef.Name)
		}
		if s.MinReplicaCount == nil || *s.MinReplicaCount < 1 || s.MaxReplicaCount <= *s.MinReplicaCount {
			t.Errorf("ScaledObject %s: replicas %v..%d (never scale to zero: renewals and reminders must not wait)", o.Metadata.Name, s.MinReplicaCount, s.MaxReplicaCount)
		}
		if len(s.Triggers) == 0 {
			t.Errorf("ScaledObject %s: no trigger", o.Metadata.Name)
		}
		for _, tr := range s.Triggers {
			md := tr.Metadata
			if tr.Type != "nats-jetstream" {
				t.Errorf("ScaledObject %s: trigger %s, want nats-jetstream", o.Metadata.Name, tr.Type)
				continue
			}
			for _, k := range []string{"natsServerMonitoringEndpoint", "account", "stream", "consumer", "lagThreshold"} {
				if md[k] == "" {
					t.Errorf("ScaledObject %s: trigger lacks %s", o.Metadata.Name, k)
				}
			}
			for k := range md {
				if !slices.Contains([]string{"natsServerMonitoringEndpoint", "account", "stream", "consumer", "lagThreshold", "activationLagThreshold", "useHttps"}, k) {
					t.Errorf("ScaledObject %s: %s is not a nats-jetstream trigger parameter", o.Metadata.Name, k)
				}
			}
			for _, k := range []string{"lagThreshold", "activationLagThreshold"} {
				if v, ok := md[k]; ok {
					if n, err := strconv.Atoi(v); err != nil || n <= 0 {
						t.Errorf("ScaledObject %s: %s %q is not a positive number", o.Metadata.Name, k, v)
					}
				}
			}
			if md["natsServerMonitoringEndpoint"] != monitoring {
				t.Errorf("ScaledObject %s reads %s, the cluster's monitoring endpoint is %s", o.Metadata.Name, md["natsServerMonitoringEndpoint"], monitoring)
			}
			cc, ok := consumers[md["stream"]]
			if !ok || cc.Durable != md["consumer"] {
				t.Errorf("ScaledObject %s: stream %s consumer %s is not one of linkpipe's durable consumers", o.Metadata.Name, md["stream"], md["consumer"])
				continue
			}
			if runs[cc.Durable] != s.ScaleTargetRef.Name {
				t.Errorf("ScaledObject %s scales %s on consumer %s, which the %s consumes", o.Metadata.Name, s.ScaleTargetRef.Name, cc.Durable, runs[cc.Durable])
			}
			scaled[s.ScaleTargetRef.Name] = true
		}
	}
	for _, w := range []string{"issuer", "mailer"} {
		if !scaled[w] {
			t.Errorf("no KEDA ScaledObject scales the %s on its consumer's lag", w)
		}
	}
}

// liveRegistry is the registry of a process hosting every worker (as the
// dev mode does): every metric any worker exports is registered on it.
func liveRegistry(t *testing.T) *prometheus.Registry {
	t.Helper()
	srv := bustest.Start(t)
	vals := config.Values{config.NATSURL.Env: srv.URL, config.DataDir.Env: t.TempDir(), config.Replicas.Env: "1"}
	p, err := worker.Start(t.Context(), worker.Settings{Name: "all", Values: vals})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	keys := link.NewKeyring("k1", bytes.Repeat([]byte{1}, 32))
	idb, err := p.OpenStore("issuer", issuer.Buckets()...)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := worker.NewIssuer(p.Deps("issuer"), idb, keys); err != nil {
		t.Fatal(err)
	}
	mdb, err := p.OpenStore("mailer", mailer.SinkBucket)
	if err != nil {
		t.Fatal(err)
	}
	sink, err := mailer.NewSink(mdb, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := worker.NewMailer(p.Deps("mailer"), worker.MailerSettings{Keys: keys, Sender: sink,
		From: "links@acme.example", PublicURL: "https://links.example"}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := worker.NewRedeemer(p.Deps("redeemer"), worker.RedeemerSettings{Seeds: [][]byte{bytes.Repeat([]byte{2}, 32)},
		PublicURL: "https://links.example", PortalURL: "https://portal.example"}); err != nil {
		t.Fatal(err)
	}
	if _, err := worker.NewProjector(p.Deps("projector")); err != nil {
		t.Fatal(err)
	}
	return p.Metrics
}

// registered reports whether reg holds a metric family named name (a
// vector without children yet counts): registering a probe of that name
// with another help text fails exactly then.
func registered(reg *prometheus.Registry, name string) bool {
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: "probe of " + name + " by deploy_test"})
	if err := reg.Register(g); err != nil {
		return true
	}
	reg.Unregister(g)
	return false
}

var (
	promStrings = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)
	promMatch   = regexp.MustCompile(`\{[^}]*\}`)
	promRange   = regexp.MustCompile(`\[[^\]]*\]`)
	promGroup   = regexp.MustCompile(`\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	promNumber  = regexp.MustCompile(`\b\d+(\.\d+)?(e[+-]?\d+)?\b`)
	promIdent   = regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*`)
	promWords   = []string{"sum", "max", "min", "avg", "count", "rate", "irate", "increase", "histogram_quantile",
		"clamp_min", "clamp_max", "time", "and", "or", "unless", "abs", "absent", "bool", "offset", "topk", "bottomk"}
)

// metricNames are the metric names a PromQL expression uses.
func metricNames(expr string) []string {
	s := promStrings.ReplaceAllString(expr, " ")
	s = promMatch.ReplaceAllString(s, " ")
	s = promRange.ReplaceAllString(s, " ")
	s = promGroup.ReplaceAllString(s, " ")
	s = promNumber.ReplaceAllString(s, " ")
	var out []string
	for _, id := range promIdent.FindAllString(s, -1) {
		if !slices.Contains(promWords, id) {
			out = append(out, id)
		}
	}
	return out
}

func TestMetricNamesOfAnExpression(t *testing.T) {
	got := metricNames(`sum(rate(linkpipe_a_total{permanent="true"}[15m])) / clamp_min(max by (le, x) (linkpipe_b_bucket), 1e-9) > 0.05 and up{job=~".*mailer.*"} == 1`)
	if want := []string{"linkpipe_a_total", "linkpipe_b_bucket", "up"}; !slices.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
}

// checkMetrics checks every metric name of expr against reg.
func checkMetrics(t *testing.T, reg *prometheus.Registry, where, expr string) {
	t.Helper()
	names := metricNames(expr)
	if len(names) == 0 {
		t.Errorf("%s: %q uses no metric", where, expr)
	}
	for _, n := range names {
		if n == "up" { // Prometheus' own, per scrape target
			continue
		}
		base := n
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if b, ok := strings.CutSuffix(n, suffix); ok && !registered(reg, n) {
				base = b
			}
		}
		if !registered(reg, base) {
			t.Errorf("%s: %s is not a metric any worker exports", where, n)
		}
	}
}

func TestAlertsAndDashboardUseOnlyMetricsThatExist(t *testing.T) {
	reg := liveRegistry(t)
	if !registered(reg, bus.MetricConsumerPending) || registered(reg, "linkpipe_no_such_metric") {
		t.Fatal("the registry probe does not tell registered names from others")
	}

	raw, err := os.ReadFile(filepath.Join("prometheus", "alerts.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var rules struct {
		Groups []struct {
			Name  string `yaml:"name"`
			Rules []struct {
				Alert       string            `yaml:"alert"`
				Expr        string            `yaml:"expr"`
				For         string            `yaml:"for"`
				Labels      map[string]string `yaml:"labels"`
				Annotations map[string]string `yaml:"annotations"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(raw, &rules); err != nil {
		t.Fatalf("alerts.yml: %v", err)
	}
	n := 0
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			n++
			where := "alert " + r.Alert
			if r.Alert == "" || r.Expr == "" || r.Labels["severity"] == "" || r.Annotations["summary"] == "" {
				t.Errorf("%s (group %s): needs alert, expr, labels.severity and a summary", where, g.Name)
			}
			if r.For != "" {
				if _, err := time.ParseDuration(r.For); err != nil {
					t.Errorf("%s: for %q: %v", where, r.For, err)
				}
			}
			if strings.Count(r.Expr, "(") != strings.Count(r.Expr, ")") {
				t.Errorf("%s: unbalanced parentheses", where)
			}
			checkMetrics(t, reg, where, r.Expr)
		}
	}
	if n < 5 {
		t.Errorf("%d alerts", n)
	}

	raw, err = os.ReadFile(filepath.Join("grafana", "linkpipe.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		UID    string `json:"uid"`
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("linkpipe.json: %v", err)
	}
	if dash.UID == "" || len(dash.Panels) == 0 {
		t.Fatal("dashboard without uid or panels")
	}
	for _, p := range dash.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, q := range p.Targets {
			checkMetrics(t, reg, "panel "+p.Title, q.Expr)
		}
	}
	// The figures operators scale on are on the dashboard.
	all := string(raw)
	for _, m := range []string{bus.MetricConsumerPending, bus.MetricConsumerAckPending, bus.MetricConsumerRedelivered, bus.MetricDeadLetters} {
		if !strings.Contains(all, m) {
			t.Errorf("the dashboard does not show %s", m)
		}
	}
}

// promtool, when installed (Debian: apt-get install prometheus), checks the
// rules the way Prometheus loads them (PromQL syntax, durations,
// templates) and runs their unit tests (prometheus/alerts_test.yml: the
// alerts fire at their thresholds).
func TestPromtoolChecksTheRules(t *testing.T) {
	bin, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool not installed (apt-get install prometheus); the other tests still check the metric names")
	}
	out, err := exec.Command(bin, "check", "rules", filepath.Join("prometheus", "alerts.yml")).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check rules: %v\n%s", err, out)
	}
	t.Logf("%s", out)
	out, err = exec.Command(bin, "test", "rules", filepath.Join("prometheus", "alerts_test.yml")).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool test rules: %v\n%s", err, out)
	}
}
