package deploy_test

import (
	"slices"
	"testing"
)

// networkPolicySpec is the part of a NetworkPolicy the test reads.
type networkPolicySpec struct {
	PodSelector struct {
		MatchLabels      map[string]string `yaml:"matchLabels"`
		MatchExpressions []struct {
			Key      string   `yaml:"key"`
			Operator string   `yaml:"operator"`
			Values   []string `yaml:"values"`
		} `yaml:"matchExpressions"`
	} `yaml:"podSelector"`
	PolicyTypes []string `yaml:"policyTypes"`
	Ingress     []struct {
		From  []map[string]any `yaml:"from"`
		Ports []struct {
			Port any `yaml:"port"`
		} `yaml:"ports"`
	} `yaml:"ingress"`
}

// selects reports whether the policy's pod selector picks the pods of the
// worker whose pods carry app.kubernetes.io/name=name.
func (s networkPolicySpec) selects(name string) bool {
	const key = "app.kubernetes.io/name"
	if v, ok := s.PodSelector.MatchLabels[key]; ok && v != name {
		return false
	}
	for _, e := range s.PodSelector.MatchExpressions {
		if e.Key == key && e.Operator == "In" && !slices.Contains(e.Values, name) {
			return false
		}
	}
	return len(s.PodSelector.MatchLabels) > 0 || len(s.PodSelector.MatchExpressions) > 0
}

// The admin address (:9090) serves /metrics and the support view, which
// has no login (README): every worker's pods are isolated for ingress, the
// admin port is reachable only from selected namespaces, and only the
// redeemer's public port is open to everyone.
func TestAdminPortsArePrivate(t *testing.T) {
	var policies []networkPolicySpec
	for _, o := range manifests(t) {
		if o.Kind == "NetworkPolicy" {
			policies = append(policies, decodeSpec[networkPolicySpec](t, &o))
		}
	}
	for _, worker := range []string{"issuer", "mailer", "redeemer"} {
		isolated := false
		for _, p := range policies {
			if !p.selects(worker) || !slices.Contains(p.PolicyTypes, "Ingress") {
				continue
			}
			isolated = true
			for _, rule := range p.Ingress {
				if len(rule.Ports) == 0 {
					t.Errorf("%s: an ingress rule allows every port", worker)
				}
				for _, port := range rule.Ports {
					open := len(rule.From) == 0
					switch port.Port {
					case "admin", 9090:
						if open {
							t.Errorf("%s: the admin port is open to every source", worker)
						}
					case "http", 8080:
						if worker != "redeemer" {
							t.Errorf("%s: opens a public port it does not have", worker)
						}
					default:
						t.Errorf("%s: unexpected port %v", worker, port.Port)
					}
				}
			}
		}
		if !isolated {
			t.Errorf("%s: no NetworkPolicy isolates its pods, so its admin address (metrics, support view) is open to the cluster", worker)
		}
	}
}
