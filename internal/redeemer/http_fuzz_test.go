package redeemer_test

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/linkpipe/linkpipe/events"
	"github.com/linkpipe/linkpipe/internal/link"
)

// validHeaderValue is what net/http's server lets through to a handler: no
// control characters but horizontal tab (it answers 400 otherwise).
func validHeaderValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; (c < 0x20 && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}

// FuzzHandler sends fuzzed requests through one Redeemer's Handler, on a
// real in-process nats-server with three issued links (sign-in, document,
// telehealth). In the path, "@0", "@1" and "@2" stand for those links'
// tokens, so the fuzzer reaches the confirm, redeem, refusal and renewal
// code as well as the not-found one. Properties:
//   - no answer is 5xx (NATS is up: not even 503);
//   - no response header holds a CR or LF, nor one of the real tokens, nor
//     a well-formed token from the request, except in the Location of
//     ServeMux's own 307 to the cleaned request path (same origin, and
//     only what the request path held);
//   - a well-formed token that names no link is not echoed in the body.
func FuzzHandler(f *testing.F) {
	e := newEnv(f)
	start := t0.Add(2 * time.Hour)
	tokens := make([]string, 3)
	tokens[0], _ = e.issue(spec{EventID: "fz-signin", ReturnTo: "/home"})
	tokens[1], _ = e.issue(spec{EventID: "fz-doc", Purpose: events.PurposeDocument, DocumentID: "d-1", ShareID: "s-1"})
	tokens[2], _ = e.issue(spec{EventID: "fz-tele", Purpose: events.PurposeTelehealth, AppointmentID: "a-1",
		StartsAt: start, EndsAt: start.Add(50 * time.Minute)})
	h := e.start().r.Handler()

	f.Add("GET", "@0", "", "", "Mozilla/5.0", "", "", "", []byte(nil))
	f.Add("POST", "@0", "", "", "Mozilla/5.0", "application/x-www-form-urlencoded", "", "", []byte(""))
	f.Add("GET", "@0", "linkpipe_session=Lx.9999999999.AAAA~junk", "", "Mozilla/5.0", "", "", "", []byte(nil))
	f.Add("POST", "@1/renew", "", "203.0.113.9, 10.0.0.1", "Mozilla/5.0", "text/plain", "", "", []byte("email=attacker@evil.example"))
	f.Add("HEAD", "@2", "", "", "Microsoft Office SafeLinks", "", "", "", []byte(nil))
	f.Add("POST", "@2", "", "", "Mozilla/5.0", "", "Origin", "https://evil.example", []byte(nil))
	f.Add("POST", "@0", "", "", "", "", "Sec-Fetch-Site", "cross-site", []byte(nil))
	f.Add("GET", "@0/../@1", "", "", "x", "", "", "", []byte(nil))
	f.Add("GET", "k1.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "", "", "x", "", "", "", []byte(nil))
	f.Add("GET", "%0d%0aSet-Cookie:%20x=1", "a=b\r\nc", "1.2.3.4\r\n", "x\x00", "", "X-Y", "\n", []byte(nil))
	f.Add("PUT", "@0", "", "::1", "x", "application/json", "", "", []byte(`{"a":1}`))
	f.Add("GET", "", "", "", "", "", "", "", []byte(nil))
	f.Add("POST", "@0/renew/extra", "", "", "", "", "", "", bytes.Repeat([]byte("A"), 1<<16))
	f.Add("GET", strings.Repeat("A", 5000), "", "", "", "", "", "", []byte(nil))

	f.Fuzz(func(t *testing.T, method, path, cookie, xff, ua, ctype, hname, hvalue string, body []byte) {
		for i, tok := range tokens {
			path = strings.ReplaceAll(path, "@"+string(rune('0'+i)), tok)
		}
		u, err := url.ParseRequestURI("/l/" + path)
		if err != nil {
			return // net/http answers 400 before any handler
		}
		req, err := http.NewRequest(method, "http://links.test", bytes.NewReader(body))
		if err != nil {
			return // not a valid method: 400 before any handler
		}
		req.URL, req.RequestURI, req.RemoteAddr = u, u.RequestURI(), "192.0.2.7:40000"
		for name, v := range map[string]string{"Cookie": cookie, "X-Forwarded-For": xff, "User-Agent": ua,
			"Content-Type": ctype, hname: hvalue} {
			if v != "" && name != "" && validHeaderValue(v) && validHeaderValue(name) && !strings.ContainsAny(name, " :") {
				req.Header.Set(name, v)
			}
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		res := w.Result()

		if res.StatusCode >= 500 {
			t.Fatalf("%s %s: %d\n%s", method, u, res.StatusCode, w.Body.String())
		}
		// The token the request names, if it is one.
		seg, _, _ := strings.Cut(strings.TrimPrefix(u.Path, "/l/"), "/")
		_, err = link.ID(seg)
		reqToken := err == nil
		// ServeMux redirects an unclean path, or one that lacks a trailing
		// slash, to its own cleaned form (307): that Location may repeat
		// what the request path holds, on the redeemer's own origin.
		muxRedirect := res.StatusCode == http.StatusTemporaryRedirect && strings.HasPrefix(res.Header.Get("Location"), "/l/")
		for name, vs := range res.Header {
			for _, v := range vs {
				if strings.ContainsAny(v, "\r\n") {
					t.Fatalf("header %s carries a line break: %q", name, v)
				}
				if name == "Location" && muxRedirect {
					for _, tok := range tokens {
						if strings.Contains(v, tok) && !strings.Contains(u.Path, tok) {
							t.Fatalf("redirect to %q reveals a token the request did not hold", v)
						}
					}
					continue
				}
				for _, tok := range tokens {
					if strings.Contains(v, tok) {
						t.Fatalf("%d: header %s reveals a token: %q", res.StatusCode, name, v)
					}
				}
				if reqToken && strings.Contains(v, seg) {
					t.Fatalf("header %s echoes the request's token: %q", name, v)
				}
			}
		}
		known := false
		for _, tok := range tokens {
			known = known || seg == tok
		}
		if reqToken && !known && strings.Contains(w.Body.String(), seg) {
			t.Fatalf("%s %s: the page echoes a token that names no link", method, u)
		}
	})
}
