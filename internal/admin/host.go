package admin

import (
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
)

// LocalOnlyMessage is the body of the 421 answer of LocalHostsOnly.
const LocalOnlyMessage = "This server answers only requests addressed to localhost, 127.0.0.1 or [::1] " +
	"(or the public host its operator configured); open it under one of those names.\n"

// LocalHostsOnly serves h only to requests whose Host header names a
// loopback host — "localhost", an address of 127.0.0.0/8 or ::1, with any
// port — or one of allowed (host names or addresses, without port,
// case-insensitive); any other Host gets 421 Misdirected Request with a
// plain message. It defends pages that show secrets (the dev inbox and its
// live links) against DNS rebinding, where a page of attacker.example
// whose name has been made to resolve to 127.0.0.1 would otherwise read
// them as its own origin: the browser still sends Host: attacker.example.
func LocalHostsOnly(h http.Handler, allowed ...string) http.Handler {
	extra := make(map[string]bool, len(allowed))
	for _, a := range allowed {
		if a = normalHost(a); a != "" {
			extra[a] = true
		}
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host := normalHost(r.Host)
		if !IsLoopbackHost(host) && !extra[host] {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.Header().Set("X-Content-Type-Options", "nosniff")
			w.Header().Set("Cache-Control", "no-store")
			w.WriteHeader(http.StatusMisdirectedRequest)
			_, _ = w.Write([]byte(LocalOnlyMessage))
			return
		}
		h.ServeHTTP(w, r)
	})
}

// HostOf returns the host of a base URL (LINKPIPE_PUBLIC_URL) or of a
// listen address (host:port), for LocalHostsOnly's allowed list; "" when
// there is none (":8080").
func HostOf(s string) string {
	if u, err := url.Parse(s); err == nil && u.Host != "" {
		return u.Hostname()
	}
	if h, _, err := net.SplitHostPort(s); err == nil {
		return h
	}
	return ""
}

// IsLoopbackHost reports whether host (without port; brackets allowed)
// is "localhost" or a loopback address.
func IsLoopbackHost(host string) bool {
	host = normalHost(host)
	if host == "localhost" {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.Unmap().IsLoopback()
}

// normalHost lowercases a Host header or host name and drops its port,
// IPv6 brackets and a trailing dot.
func normalHost(s string) string {
	s = strings.ToLower(strings.TrimSpace(s))
	if h, _, err := net.SplitHostPort(s); err == nil {
		s = h
	}
	s = strings.TrimSuffix(strings.TrimPrefix(s, "["), "]")
	return strings.TrimSuffix(s, ".")
}

// InternalHostsOnly serves h only to requests whose Host header names a
// loopback host, an IP address, or a name without a dot (a container or
// service name such as "issuer"), with any port; any other Host gets 421
// as from LocalHostsOnly. It defends pages of an admin address that show
// client histories (the support view) against DNS rebinding: a rebinding
// page lives on a registered domain, so its Host always has a dot and is
// never an address.
func InternalHostsOnly(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host := normalHost(r.Host)
		_, ipErr := netip.ParseAddr(host)
		if host == "" || (ipErr != nil && strings.Contains(host, ".")) {
			misdirected(w)
			return
		}
		h.ServeHTTP(w, r)
	})
}

func misdirected(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusMisdirectedRequest)
	_, _ = w.Write([]byte(InternalOnlyMessage))
}

// InternalOnlyMessage is the body of the 421 answer of InternalHostsOnly.
const InternalOnlyMessage = "This admin page answers only requests addressed to an IP address, localhost " +
	"or a service name without a dot; open it under one of those.\n"
