package redeemer

import (
	"fmt"
	"net/http"
	"net/netip"
	"testing"
	"time"
)

func TestGenCacheIsBoundedAndKeepsHotEntries(t *testing.T) {
	c := newGenCache[string, int](100)
	c.put("hot", 1)
	for i := range 1000 {
		c.put(fmt.Sprint(i), i)
		if _, ok := c.get("hot"); !ok {
			t.Fatalf("hot entry evicted after %d puts", i)
		}
		if n := c.len(); n > 200 {
			t.Fatalf("%d entries, bound is 200", n)
		}
	}
	if _, ok := c.get("0"); ok {
		t.Fatal("cold entry kept forever")
	}
	if v, ok := c.get("999"); !ok || v != 999 {
		t.Fatalf("recent entry: %v %v", v, ok)
	}
}

func TestIPLimitersAreBoundedAndRefill(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	l := newIPLimiters(DefaultRenewPerIP, 2, 10)
	if !l.allow("1.2.3.4", now) || !l.allow("1.2.3.4", now) || l.allow("1.2.3.4", now) {
		t.Fatal("burst of 2 not enforced")
	}
	if !l.allow("5.6.7.8", now) {
		t.Fatal("another IP is limited")
	}
	if !l.allow("1.2.3.4", now.Add(31*time.Second)) {
		t.Fatal("no refill after 30s")
	}
	for i := range 1000 {
		l.allow(fmt.Sprintf("10.0.%d.%d", i/256, i%256), now)
	}
	if n := l.lims.len(); n > 10 {
		t.Fatalf("%d limiters, bound is 10", n)
	}
}

func TestClientAddrTrustsOnlyProxies(t *testing.T) {
	ps := trustedProxies([]netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/8")})
	for _, tc := range []struct {
		remote string
		xff    []string
		want   string
	}{
		{"203.0.113.1:5000", nil, "203.0.113.1"},
		{"203.0.113.1:5000", []string{"198.51.100.1"}, "203.0.113.1"}, // not from a proxy: header ignored
		{"10.0.0.2:5000", nil, "10.0.0.2"},
		{"10.0.0.2:5000", []string{"198.51.100.1"}, "198.51.100.1"},
		{"10.0.0.2:5000", []string{"1.1.1.1, 198.51.100.1, 10.9.9.9"}, "198.51.100.1"}, // rightmost untrusted
		{"10.0.0.2:5000", []string{"1.1.1.1", "198.51.100.1"}, "198.51.100.1"},         // several headers
		{"10.0.0.2:5000", []string{"garbage, 198.51.100.1"}, "198.51.100.1"},
		{"10.0.0.2:5000", []string{"198.51.100.1, garbage"}, "10.0.0.2"}, // a broken hop ends the walk
		{"10.0.0.2:5000", []string{"10.1.1.1"}, "10.1.1.1"},              // only proxies: the farthest one
		{"[fd00::1]:5000", []string{"2001:db8::5"}, "2001:db8::5"},
		{"[::ffff:10.0.0.2]:5000", []string{"198.51.100.1"}, "198.51.100.1"}, // v4-mapped
	} {
		req := &http.Request{RemoteAddr: tc.remote, Header: http.Header{}}
		for _, h := range tc.xff {
			req.Header.Add("X-Forwarded-For", h)
		}
		a, ok := ps.clientAddr(req)
		if !ok || a.String() != tc.want {
			t.Errorf("%s %q: %v %v, want %s", tc.remote, tc.xff, a, ok, tc.want)
		}
	}
	if _, ok := ps.clientAddr(&http.Request{RemoteAddr: "pipe"}); ok {
		t.Error("unparsable remote address accepted")
	}
	if _, ok := (proxies{}).clientAddr(&http.Request{RemoteAddr: "10.0.0.2:1", Header: http.Header{"X-Forwarded-For": {"1.2.3.4"}}}); !ok {
		t.Error("no proxies")
	}
}

func TestIPKeyGroupsIPv6Per64(t *testing.T) {
	for in, want := range map[string]string{
		"192.0.2.1":             "192.0.2.1",
		"2001:db8:1:2::1":       "2001:db8:1:2::/64",
		"2001:db8:1:2:ffff::99": "2001:db8:1:2::/64",
		"2001:db8:1:3::1":       "2001:db8:1:3::/64",
	} {
		if got := ipKey(netip.MustParseAddr(in)); got != want {
			t.Errorf("ipKey(%s) = %s, want %s", in, got, want)
		}
	}
	// One host rotating through its /64 is one limiter, and the table stays bounded.
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	l := newIPLimiters(DefaultClickPerIP, 3, 100)
	allowed := 0
	for i := range 1000 {
		if l.allow(ipKey(netip.MustParseAddr(fmt.Sprintf("2001:db8:1:2::%x", i+1))), now) {
			allowed++
		}
	}
	if allowed != 3 {
		t.Fatalf("%d requests of one /64 allowed, want the burst (3)", allowed)
	}
	for i := range 10000 {
		l.allow(ipKey(netip.MustParseAddr(fmt.Sprintf("2001:db8:%x:%x::1", i/65536, i%65536))), now)
	}
	if n := l.lims.len(); n > 100 {
		t.Fatalf("%d limiters, bound is 100", n)
	}
}

func TestEventBudgetsAreBounded(t *testing.T) {
	b := newEventBudgets(3, 10)
	if !b.take("L1", "touched", "a") || b.take("L1", "touched", "a") {
		t.Fatal("a repeated id is published again")
	}
	if !b.take("L1", "touched", "b") || !b.take("L1", "touched", "c") || b.take("L1", "touched", "d") {
		t.Fatal("budget of 3 not enforced")
	}
	if !b.take("L1", "continued", "x") || !b.take("L2", "touched", "a") {
		t.Fatal("budgets are per link and kind")
	}
	for i := range 1000 {
		b.take(fmt.Sprintf("L%d", i), "touched", "a")
	}
	if n := b.spent.len(); n > 10 {
		t.Fatalf("%d budgets held, bound is 10", n)
	}
}
