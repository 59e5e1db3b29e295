package redeemer

import (
	"fmt"
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
