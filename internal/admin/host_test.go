package admin_test

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/linkpipe/linkpipe/internal/admin"
)

func TestLocalHostsOnly(t *testing.T) {
	h := admin.LocalHostsOnly(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}), "Devbox.Example", "")
	for host, want := range map[string]int{
		"localhost": 200, "localhost:8080": 200, "LocalHost.:1": 200, "127.0.0.1": 200, "127.1.2.3:9": 200,
		"[::1]:8080": 200, "[::1]": 200, "::1": 200, "[::ffff:127.0.0.1]:80": 200, "devbox.example:8080": 200, "devbox.example": 200,
		"attacker.example": 421, "attacker.example:8080": 421, "localhost.attacker.example": 421, "127.0.0.1.nip.io": 421,
		"10.0.0.5:8080": 421, "[::]:8080": 421, "": 421,
	} {
		req := httptest.NewRequest(http.MethodGet, "/inbox.json", nil)
		req.Host = host
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != want {
			t.Errorf("Host %q: %d, want %d", host, rec.Code, want)
		}
	}
	for in, want := range map[string]string{"http://devbox.example:8080/x": "devbox.example", "127.0.0.1:8025": "127.0.0.1", ":8025": "", "[::1]:1": "::1"} {
		if got := admin.HostOf(in); got != want {
			t.Errorf("HostOf(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestInternalHostsOnly(t *testing.T) {
	h := admin.InternalHostsOnly(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	for host, want := range map[string]int{
		"localhost": 200, "127.0.0.1:9090": 200, "[::1]:9090": 200, "10.0.0.5:9090": 200, "issuer:9090": 200, "redeemer": 200,
		"attacker.example": 421, "attacker.example:9090": 421, "127.0.0.1.nip.io": 421, "issuer.attacker.example": 421, "": 421,
	} {
		req := httptest.NewRequest(http.MethodGet, "/support", nil)
		req.Host = host
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != want {
			t.Errorf("Host %q: %d, want %d", host, rec.Code, want)
		}
	}
}
