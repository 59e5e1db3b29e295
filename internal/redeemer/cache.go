package redeemer

import (
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// genCache is a bounded map with two generations: when the current one
// reaches its size the previous one is dropped and the current one becomes
// the previous. Entries used in the previous generation move forward, so a
// hot entry stays; memory is bounded by twice size.
type genCache[K comparable, V any] struct {
	mu        sync.Mutex
	size      int
	cur, prev map[K]V
}

func newGenCache[K comparable, V any](size int) *genCache[K, V] {
	if size < 1 {
		size = 1
	}
	return &genCache[K, V]{size: size, cur: make(map[K]V), prev: make(map[K]V)}
}

func (c *genCache[K, V]) get(k K) (V, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if v, ok := c.cur[k]; ok {
		return v, true
	}
	v, ok := c.prev[k]
	if ok {
		c.putLocked(k, v)
	}
	return v, ok
}

func (c *genCache[K, V]) put(k K, v V) {
	c.mu.Lock()
	c.putLocked(k, v)
	c.mu.Unlock()
}

func (c *genCache[K, V]) putLocked(k K, v V) {
	if len(c.cur) >= c.size {
		c.prev, c.cur = c.cur, make(map[K]V, c.size)
	}
	c.cur[k] = v
}

// len is the number of entries held (both generations; for tests).
func (c *genCache[K, V]) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.cur) + len(c.prev)
}

// ipLimiters are the in-process per-IP token buckets of renewal requests,
// in a bounded table.
type ipLimiters struct {
	limit rate.Limit
	burst int
	lims  *genCache[string, *rate.Limiter]
	mu    sync.Mutex
}

func newIPLimiters(limit rate.Limit, burst, max int) *ipLimiters {
	return &ipLimiters{limit: limit, burst: burst, lims: newGenCache[string, *rate.Limiter](max / 2)}
}

// allow takes one token from ip's bucket at now.
func (l *ipLimiters) allow(ip string, now time.Time) bool {
	l.mu.Lock()
	lim, ok := l.lims.get(ip)
	if !ok {
		lim = rate.NewLimiter(l.limit, l.burst)
		l.lims.put(ip, lim)
	}
	l.mu.Unlock()
	return lim.AllowN(now, 1)
}

// eventBudgets bound the click events (touched, expired, continuations)
// this process publishes per link and kind: an event whose id repeats the
// kind's last one is not published again (JetStream would drop it as a
// duplicate anyway), and after budget distinct ones none is. The table is
// bounded like the issued cache.
type eventBudgets struct {
	budget int
	mu     sync.Mutex
	spent  *genCache[string, budgetEntry]
}

type budgetEntry struct {
	last string
	n    int
}

func newEventBudgets(budget, size int) *eventBudgets {
	return &eventBudgets{budget: budget, spent: newGenCache[string, budgetEntry](size / 2)}
}

// take reports whether the event id of link and kind is to be published,
// and counts it if so.
func (b *eventBudgets) take(linkID, kind, id string) bool {
	key := linkID + "\x00" + kind
	b.mu.Lock()
	defer b.mu.Unlock()
	e, _ := b.spent.get(key)
	if e.last == id || e.n >= b.budget {
		return false
	}
	b.spent.put(key, budgetEntry{last: id, n: e.n + 1})
	return true
}

// proxies are the trusted proxies (LINKPIPE_TRUSTED_PROXIES).
type proxies []netip.Prefix

func trustedProxies(ps []netip.Prefix) proxies {
	out := make(proxies, 0, len(ps))
	for _, p := range ps {
		out = append(out, p.Masked())
	}
	return out
}

func (ps proxies) trusted(a netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// clientAddr is the client's address: the connection's, or, when the
// connection comes from a trusted proxy, the rightmost X-Forwarded-For hop
// that is not a trusted proxy (the hops left of it are the client's to
// invent). A hop that does not parse ends the walk at the last good one.
// ok is false when the connection's address does not parse.
func (ps proxies) clientAddr(req *http.Request) (netip.Addr, bool) {
	ap, err := netip.ParseAddrPort(req.RemoteAddr)
	if err != nil {
		return netip.Addr{}, false
	}
	addr := ap.Addr().Unmap()
	if len(ps) == 0 || !ps.trusted(addr) {
		return addr, true
	}
	hops := req.Header.Values("X-Forwarded-For")
	for i := len(hops) - 1; i >= 0; i-- {
		parts := strings.Split(hops[i], ",")
		for j := len(parts) - 1; j >= 0; j-- {
			hop, err := netip.ParseAddr(strings.TrimSpace(parts[j]))
			if err != nil {
				return addr, true
			}
			addr = hop.Unmap()
			if !ps.trusted(addr) {
				return addr, true
			}
		}
	}
	return addr, true
}

// ipKey is the per-IP limit's key of an address: the address for IPv4, its
// /64 for IPv6 (one host's share of addresses).
func ipKey(a netip.Addr) string {
	if a.Is6() && !a.Is4In6() {
		p, err := a.Prefix(64)
		if err == nil {
			return p.String()
		}
	}
	return a.String()
}

// clientKey is the per-IP limit's key of a request's client.
func (r *Redeemer) clientKey(req *http.Request) string {
	a, ok := r.proxies.clientAddr(req)
	if !ok {
		return req.RemoteAddr
	}
	return ipKey(a)
}
