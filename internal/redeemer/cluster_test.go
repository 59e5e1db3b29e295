package redeemer_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/linkpipe/linkpipe/events"
	"github.com/linkpipe/linkpipe/internal/bus"
	"github.com/linkpipe/linkpipe/internal/bus/bustest"
	"github.com/linkpipe/linkpipe/internal/eventually"
	"github.com/linkpipe/linkpipe/internal/practice"
	"github.com/linkpipe/linkpipe/internal/redeemer"
	"github.com/linkpipe/linkpipe/internal/scope"
)

// clusterEnv is the fixture's env moved onto a 3-node JetStream cluster
// with every stream at R3: newEnv's keyring, signer, portals and clock are
// kept, its connection and practice directory are replaced by ones on the
// cluster (node 0), and replica i of the redeemer connects to node i.
type clusterEnv struct {
	*env
	cluster *bustest.Cluster
}

func newClusterEnv(t *testing.T) *clusterEnv {
	t.Helper()
	e := newEnv(t) // its single server stays up, unused
	c := bustest.StartCluster(t, 3)
	e.srv = nil
	e.nc, e.js = c.ConnectTo(t, 0)
	ctx := context.Background()
	dir, err := practice.Open(ctx, e.js, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dir.Close() })
	e.dir = dir
	if err := e.dir.Put(ctx, &events.PracticeUpdated{
		Envelope: events.Envelope{EventID: "p1", PracticeID: practiceAcme},
		Practice: events.Practice{Name: "Acme Therapy", ReplyTo: "desk@acme.example", PortalURL: e.portal.URL + "/portal"},
	}); err != nil {
		t.Fatal(err)
	}
	return &clusterEnv{env: e, cluster: c}
}

// startOn starts a redeemer replica whose NATS connection is to node i.
func (ce *clusterEnv) startOn(i int) *server {
	nc, js := ce.cluster.ConnectTo(ce.t, i)
	return ce.start(func(cfg *redeemer.Config) { cfg.NC, cfg.JS = nc, js })
}

// seenEverywhere waits until every node answers a direct get of the
// link's issued record and of its scope's current state with the link, so
// that the race below tests the conditional publish, not replication lag.
func (ce *clusterEnv) seenEverywhere(linkID string) {
	ce.t.Helper()
	ctx := context.Background()
	for i := range ce.cluster.URLs {
		_, js := ce.cluster.ConnectTo(ce.t, i)
		links, scopes := bus.NewReader(js, bus.StreamLinks), bus.NewReader(js, bus.StreamScopes)
		eventually.True(ce.t, 15*time.Second, func() bool {
			var ev events.LinkEvent
			if _, err := links.LastJSON(ctx, events.LinkSubject(linkID, events.TypeIssued), &ev); err != nil {
				return false
			}
			var st scope.State
			_, err := scopes.LastJSON(ctx, scope.OfLink(&ev), &st)
			return err == nil && st.LinkID == linkID
		}, fmt.Sprintf("link %s on node %d", linkID, i))
	}
}

// TestConcurrentPostsOneWinnerOnR3: the redeemer's exactly-one-winner
// invariant on a 3-node cluster with R3 streams. Three replicas, each on
// its own node; for each of 10 sign-in links (10 clients), 30 POSTs
// released together and spread over the replicas. Every link has exactly
// one 303 to the portal, 29 × 410 used, and exactly one links.<id>.used
// event from the projectors.
func TestConcurrentPostsOneWinnerOnR3(t *testing.T) {
	const links, clicks = 10, 30
	ce := newClusterEnv(t)
	servers := []*server{ce.startOn(0), ce.startOn(1), ce.startOn(2)}
	toks, ids := make([]string, links), make([]string, links)
	for l := range links {
		toks[l], ids[l] = ce.issue(spec{EventID: fmt.Sprintf("ev-r3-%d", l), Client: fmt.Sprintf("c-r3-%d", l)})
		ce.seenEverywhere(ids[l])
	}

	type result struct {
		link int
		ans  answer
		err  error
	}
	results := make(chan result, links*clicks)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for l := range links {
		for i := range clicks {
			srv := servers[(l+i)%len(servers)]
			wg.Go(func() {
				<-start
				a, err := doE(noRedirect(nil), "POST", srv.URL+"/l/"+toks[l])
				results <- result{l, a, err}
			})
		}
	}
	close(start)
	wg.Wait()
	close(results)

	winners := make([]int, links)
	others := make([]map[string]int, links)
	for l := range others {
		others[l] = map[string]int{}
	}
	for r := range results {
		switch {
		case r.err != nil:
			t.Fatalf("link %d: %v", r.link, r.err)
		case r.ans.status == http.StatusSeeOther:
			winners[r.link]++
		default:
			others[r.link][fmt.Sprintf("%d %s", r.ans.status, r.ans.reason())]++
		}
	}
	for l := range links {
		if winners[l] != 1 || others[l]["410 used"] != clicks-1 {
			t.Errorf("link %d: %d winners, others %v; want 1 and %d × 410 used", l, winners[l], others[l], clicks-1)
		}
	}
	if t.Failed() {
		return
	}
	for _, id := range ids {
		eventually.True(t, 15*time.Second, func() bool { return ce.count(bus.StreamLinks, events.LinkSubject(id, events.TypeUsed)) >= 1 }, "used event")
	}
	ce.projectorIdle()
	for l, id := range ids {
		if n := ce.count(bus.StreamLinks, events.LinkSubject(id, events.TypeUsed)); n != 1 {
			t.Errorf("link %d: %d used events, want 1", l, n)
		}
	}
}
