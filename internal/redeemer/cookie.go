package redeemer

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// SessionCookie is the name of the cookie that lets the browser that
// redeemed a link continue its session when the link is clicked again. It
// is HttpOnly, SameSite=Lax, Path=/l/, Secure when the public URL is https,
// and holds up to maxSessions entries "<link id>.<expiry unix>.<mac>", where
// mac = HMAC-SHA256(CookieKey, link id, expiry) truncated to 16 bytes.
const SessionCookie = "linkpipe_session"

const (
	maxSessions = 8
	sessionSep  = "~"
	macBytes    = 16
)

func (r *Redeemer) sessionMAC(linkID string, exp int64) string {
	m := hmac.New(sha256.New, r.cookieKey)
	m.Write([]byte("linkpipe/session/v1\x00" + linkID + "\x00" + strconv.FormatInt(exp, 10)))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil)[:macBytes])
}

type sessionEntry struct {
	linkID string
	exp    int64
}

// sessions returns the authentic, unexpired entries of the request's cookie.
func (r *Redeemer) sessions(req *http.Request, now time.Time) []sessionEntry {
	c, err := req.Cookie(SessionCookie)
	if err != nil || len(c.Value) > 4096 {
		return nil
	}
	var out []sessionEntry
	for _, part := range strings.Split(c.Value, sessionSep) {
		id, rest, ok := strings.Cut(part, ".")
		if !ok {
			continue
		}
		expS, mac, ok := strings.Cut(rest, ".")
		if !ok {
			continue
		}
		exp, err := strconv.ParseInt(expS, 10, 64)
		if err != nil || exp <= now.Unix() {
			continue
		}
		if !hmac.Equal([]byte(mac), []byte(r.sessionMAC(id, exp))) {
			continue
		}
		out = append(out, sessionEntry{id, exp})
		if len(out) == maxSessions {
			break
		}
	}
	return out
}

// hasSession reports whether the request carries a live session of linkID.
func (r *Redeemer) hasSession(req *http.Request, linkID string, now time.Time) bool {
	for _, e := range r.sessions(req, now) {
		if e.linkID == linkID {
			return true
		}
	}
	return false
}

// setSession (re)starts linkID's session in the browser: expiry now+Idle,
// newest first, other live sessions kept.
func (r *Redeemer) setSession(w http.ResponseWriter, req *http.Request, linkID string, now time.Time) {
	exp := now.Add(r.cfg.Idle).Unix()
	parts := []string{linkID + "." + strconv.FormatInt(exp, 10) + "." + r.sessionMAC(linkID, exp)}
	for _, e := range r.sessions(req, now) {
		if e.linkID == linkID || len(parts) == maxSessions {
			continue
		}
		parts = append(parts, e.linkID+"."+strconv.FormatInt(e.exp, 10)+"."+r.sessionMAC(e.linkID, e.exp))
	}
	http.SetCookie(w, &http.Cookie{
		Name:     SessionCookie,
		Value:    strings.Join(parts, sessionSep),
		Path:     r.prefix + "/l/",
		MaxAge:   r.idleSecs,
		HttpOnly: true,
		Secure:   r.secure,
		SameSite: http.SameSiteLaxMode,
	})
}

// CookieKeyFromSeed derives the session-cookie key from the ticket key's
// seed, so that every replica given the same LINKPIPE_TICKET_KEY accepts
// the others' cookies without another secret to distribute.
func CookieKeyFromSeed(seed []byte) []byte {
	k := sha256.Sum256(append([]byte("linkpipe/cookie/v1\x00"), seed...))
	return k[:]
}
