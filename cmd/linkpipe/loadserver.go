package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"
)

// serverCounts is what the nats-server the load command started has
// handled so far, from its monitoring endpoint: messages in (publishes,
// API and direct-get requests, acks) and out (deliveries, replies, acks of
// publishes), and each stream's last sequence (the messages it stored).
type serverCounts struct {
	in, out uint64
	stored  map[string]uint64
}

// serverCounts reads the counts; ok is false when the stack has no
// monitoring endpoint (the embedded stack, -nats-url) or it did not answer.
func (r *loadRun) serverCounts(ctx context.Context) (c serverCounts, ok bool) {
	if r.st.monitorURL == "" {
		return c, false
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var varz struct {
		InMsgs  uint64 `json:"in_msgs"`
		OutMsgs uint64 `json:"out_msgs"`
	}
	var jsz struct {
		Accounts []struct {
			Streams []struct {
				Name  string `json:"name"`
				State struct {
					LastSeq uint64 `json:"last_seq"`
				} `json:"state"`
			} `json:"stream_detail"`
		} `json:"account_details"`
	}
	if getJSON(ctx, r.st.monitorURL+"/varz", &varz) != nil || getJSON(ctx, r.st.monitorURL+"/jsz?streams=true", &jsz) != nil {
		return c, false
	}
	c = serverCounts{in: varz.InMsgs, out: varz.OutMsgs, stored: map[string]uint64{}}
	for _, a := range jsz.Accounts {
		for _, s := range a.Streams {
			c.stored[s.Name] = s.State.LastSeq
		}
	}
	return c, true
}

// reportServer prints what the server handled per unit of work between
// two readings: the messages in and out, and the messages each stream
// stored (the work whose cost is per message whatever its size).
func (r *loadRun) reportServer(per string, c0, c1 serverCounts, n int) {
	f := func(d uint64) float64 { return float64(d) / float64(n) }
	names := make([]string, 0, len(c1.stored))
	var total uint64
	for name, seq := range c1.stored {
		if seq > c0.stored[name] {
			names = append(names, name)
			total += seq - c0.stored[name]
		}
	}
	slices.Sort(names)
	stored := make([]string, len(names))
	for i, name := range names {
		stored[i] = fmt.Sprintf("%s %.2f", name, f(c1.stored[name]-c0.stored[name]))
	}
	fmt.Fprintf(r.out, "nats-server per %s: %.1f messages in, %.1f out; %.2f stored (%s)\n",
		per, f(c1.in-c0.in), f(c1.out-c0.out), f(total), strings.Join(stored, ", "))
}
