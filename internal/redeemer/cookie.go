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
// is a browser-session cookie (no Max-Age, no Expires), HttpOnly,
// SameSite=Lax; on an https public URL it is named "__Host-" + SessionCookie,
// Secure, Path=/; otherwise Path=<public path>/l/. It holds up to
// maxSessions entries "<link id>.<expiry unix>.<mac>", where mac =
// HMAC-SHA256(CookieKey, link id, expiry) truncated to 16 bytes, and the
// expiry is min(the link's expires_at, the last redemption or
// continuation + Idle): an entry never outlives its link.
const SessionCookie = "linkpipe_session"

// hostPrefix names a cookie browsers accept only Secure, with Path=/ and
// no Domain.
const hostPrefix = "__Host-"

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

// cookieName and cookiePath: __Host- and / on https, else the plain name
// scoped to the link routes.
func (r *Redeemer) cookieName() string {
	if r.secure {
		return hostPrefix + SessionCookie
	}
	return SessionCookie
}

func (r *Redeemer) cookiePath() string {
	if r.secure {
		return "/"
	}
	return r.prefix + "/l/"
}

type sessionEntry struct {
	linkID string
	exp    int64
}

// entries returns the authentic entries of the request's cookie, expired
// or not.
func (r *Redeemer) entries(req *http.Request) []sessionEntry {
	c, err := req.Cookie(r.cookieName())
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
		if err != nil {
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

// session reports whether the request carries an authentic session entry
// of linkID (held) and whether it is still live at now.
func (r *Redeemer) session(req *http.Request, linkID string, now time.Time) (held, live bool) {
	for _, e := range r.entries(req) {
		if e.linkID == linkID {
			held = true
			live = live || e.exp > now.Unix()
		}
	}
	return held, live
}

// setSession (re)starts linkID's session in the browser: expiry
// min(start+Idle, the link's expiresAt), start being the time of the pass, newest first, the other entries
// kept (an expired one still tells its browser "expired" rather than "used").
func (r *Redeemer) setSession(w http.ResponseWriter, req *http.Request, linkID string, start, expiresAt time.Time) {
	end := start.Add(r.cfg.Idle)
	if !expiresAt.IsZero() && expiresAt.Before(end) {
		end = expiresAt
	}
	exp := end.Unix() // rounds down: never after expiresAt
	parts := []string{linkID + "." + strconv.FormatInt(exp, 10) + "." + r.sessionMAC(linkID, exp)}
	for _, e := range r.entries(req) {
		if e.linkID == linkID || len(parts) == maxSessions {
			continue
		}
		parts = append(parts, e.linkID+"."+strconv.FormatInt(e.exp, 10)+"."+r.sessionMAC(e.linkID, e.exp))
	}
	http.SetCookie(w, &http.Cookie{
		Name:     r.cookieName(),
		Value:    strings.Join(parts, sessionSep),
		Path:     r.cookiePath(),
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
