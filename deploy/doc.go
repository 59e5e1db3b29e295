// Package deploy holds linkpipe's deployment files, not code: the
// Kubernetes manifests (k8s/, kustomize), the NATS server configurations
// of docker-compose.yml (nats/), the load balancer in front of the
// redeemers (nginx/), Prometheus alert rules (prometheus/) and a Grafana
// dashboard (grafana/). There is no cluster or Docker engine in the test
// environment, so deploy_test.go is what keeps them true: it parses every
// manifest, checks each container's environment against the workers'
// configuration, the KEDA triggers against the consumers linkpipe
// creates, and every metric an alert or a panel uses against the live
// registry of the workers.
package deploy
