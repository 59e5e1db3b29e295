package redeemer

import (
	"net"
	"net/http"
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

// clientIP is the connection's remote address. Proxy headers are not
// trusted: behind a load balancer, terminate there or put the limit there.
func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}
