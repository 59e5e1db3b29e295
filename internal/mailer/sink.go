package mailer

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/linkpipe/linkpipe/internal/clock"
	"github.com/linkpipe/linkpipe/internal/locale"
	"github.com/linkpipe/linkpipe/internal/mail"
)

// SinkBucket is the bbolt bucket the Sink keeps its messages in.
const SinkBucket = "sink"

// SinkConcurrency is how many emails a mailer keeps in flight to the Sink
// when LINKPIPE_MAIL_CONCURRENCY is unset. The sink has no sending rate to
// pace by; it commits every email waiting in one transaction, and the NATS
// client flushes every request waiting in one write, so the more emails in
// flight the fewer commits and writes per email: at 8 in flight a mailer
// spent twice the CPU per email and sent half as many per second as at 256
// (docs/performance.md, "Mailer concurrency with the sink").
const SinkConcurrency = 256

// Sink is the local mail driver (LINKPIPE_MAIL_DRIVER=sink, and the
// all-in-one dev mode): a Sender that keeps every message in the mailer's
// own bbolt file, and an inbox to read them (Handler).
type Sink struct {
	db    *bolt.DB
	clock clock.Clock
	// cat speaks the inbox pages in the browser's language.
	cat *locale.Catalog

	// The group commit of Send (store).
	mu         sync.Mutex
	pending    []*storeReq
	committing bool

	// arrived is closed (and replaced) whenever an email is stored, to wake
	// inbox requests waiting for one (?since=).
	arrivedMu sync.Mutex
	arrived   chan struct{}
}

// MaxInboxWait bounds how long GET <prefix>?since= waits for an email.
const MaxInboxWait = 10 * time.Second

// SinkMessage is one stored email; its JSON form is what GET <prefix>.json
// lists.
type SinkMessage struct {
	// ID is the inbox id (increasing), used in <prefix>/<id>.
	ID        string            `json:"id"`
	MessageID string            `json:"message_id"`
	MailID    string            `json:"mail_id,omitempty"`
	At        time.Time         `json:"at"`
	From      string            `json:"from"`
	To        string            `json:"to"`
	ReplyTo   string            `json:"reply_to,omitempty"`
	Subject   string            `json:"subject"`
	Text      string            `json:"text"`
	HTML      string            `json:"html"`
	Headers   map[string]string `json:"headers,omitempty"`
	// Links are the URLs found in the text body, in order.
	Links []string `json:"links"`
}

// htmlLang finds an email's <html lang="..."> (a BCP 47 tag).
var htmlLang = regexp.MustCompile(`<html[^>]*\slang="([A-Za-z]{2,3}(?:-[A-Za-z0-9]{1,8})*)"`)

// Lang is the email's language, from its HTML's <html lang> ("" when it
// has none): the lang of its subject and text on a page in another.
func (m SinkMessage) Lang() string {
	if sub := htmlLang.FindStringSubmatch(m.HTML); sub != nil {
		return sub[1]
	}
	return ""
}

// NewSink returns a Sink storing into db (bucket "sink", created here).
func NewSink(db *bolt.DB, clk clock.Clock) (*Sink, error) {
	if db == nil {
		return nil, errors.New("mailer: sink needs a bbolt db")
	}
	if clk == nil {
		clk = clock.Real{}
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists([]byte(SinkBucket))
		return err
	}); err != nil {
		return nil, fmt.Errorf("mailer: sink bucket: %w", err)
	}
	cat, err := locale.New()
	if err != nil {
		return nil, fmt.Errorf("mailer: sink: %w", err)
	}
	return &Sink{db: db, clock: clk, cat: cat, arrived: make(chan struct{})}, nil
}

var urlPattern = regexp.MustCompile(`https?://[^\s<>"']+`)

// Send implements Sender: it stores m and returns "sink-<id>".
func (s *Sink) Send(ctx context.Context, m *mail.Message) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", fmt.Errorf("mailer: sink: %w: %w", mail.ErrTransient, err)
	}
	msg := *m
	msg.Headers = make(map[string]string, len(m.Headers))
	for k, v := range m.Headers {
		msg.Headers[k] = v
	}
	msg.Sanitize()
	if msg.To == "" {
		return "", fmt.Errorf("mailer: sink: %w: no recipient", mail.ErrPermanent)
	}
	rec := SinkMessage{
		At: s.clock.Now().UTC(), From: msg.From, To: msg.To, ReplyTo: msg.ReplyTo, Subject: msg.Subject,
		Text: msg.Text, HTML: msg.HTML, Headers: msg.Headers, MailID: msg.Headers[mail.HeaderMailID],
		Links: urlPattern.FindAllString(msg.Text, -1),
	}
	r := &storeReq{rec: rec, done: make(chan struct{}), lead: make(chan struct{})}
	s.store(r)
	if r.err != nil {
		return "", fmt.Errorf("mailer: sink: %w: %w", mail.ErrTransient, r.err)
	}
	s.arrivedMu.Lock()
	close(s.arrived)
	s.arrived = make(chan struct{})
	s.arrivedMu.Unlock()
	return r.rec.MessageID, nil
}

// storeReq is one email waiting to be stored; store fills rec's ID and
// MessageID, or err, then closes done.
type storeReq struct {
	rec  SinkMessage
	err  error
	done chan struct{}
	// lead is closed when this request's sender is to commit the
	// pending requests (its own among them).
	lead chan struct{}
}

// store commits r with every other email waiting at that moment in one
// bbolt transaction (one fsync): a group commit. A sender that finds no
// commit under way commits at once, alone; those that arrive meanwhile
// wait, and the first of them commits them all when the running commit
// ends. Unlike bolt's Batch there is no timer: one email alone is stored
// without delay, and under load a transaction holds what queued during
// the previous one.
func (s *Sink) store(r *storeReq) {
	s.mu.Lock()
	s.pending = append(s.pending, r)
	if s.committing {
		s.mu.Unlock()
		select {
		case <-r.done:
			return
		case <-r.lead:
		}
		s.mu.Lock()
	}
	s.committing = true
	batch := s.pending
	s.pending = nil
	s.mu.Unlock()

	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte(SinkBucket))
		for _, q := range batch {
			seq, err := b.NextSequence()
			if err != nil {
				return err
			}
			q.rec.ID = strconv.FormatUint(seq, 10)
			q.rec.MessageID = "sink-" + q.rec.ID
			data, err := encodeSinkMessage(&q.rec)
			if err != nil {
				return err
			}
			if err := b.Put(binary.BigEndian.AppendUint64(nil, seq), data); err != nil {
				return err
			}
		}
		return nil
	})
	for _, q := range batch {
		q.err = err
		if q != r {
			close(q.done)
		}
	}

	s.mu.Lock()
	if len(s.pending) > 0 {
		close(s.pending[0].lead)
	} else {
		s.committing = false
	}
	s.mu.Unlock()
}

// encodeSinkMessage is m as JSON without html/template-style escaping of
// <, > and & (an email's HTML is full of them: escaped, it is a third
// longer and slower to write; any JSON decoder reads both the same).
func encodeSinkMessage(m *SinkMessage) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(m); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}

// Messages returns the stored messages, newest first; limit <= 0 means all.
func (s *Sink) Messages(limit int) ([]SinkMessage, error) {
	var out []SinkMessage
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket([]byte(SinkBucket)).Cursor()
		for k, v := c.Last(); k != nil; k, v = c.Prev() {
			var m SinkMessage
			if err := json.Unmarshal(v, &m); err != nil {
				return fmt.Errorf("message %x: %w", k, err)
			}
			out = append(out, m)
			if limit > 0 && len(out) >= limit {
				break
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("mailer: sink: %w", err)
	}
	return out, nil
}

// Message returns one stored message by inbox id.
func (s *Sink) Message(id string) (SinkMessage, bool, error) {
	seq, err := strconv.ParseUint(id, 10, 64)
	if err != nil {
		return SinkMessage{}, false, nil
	}
	var m SinkMessage
	found := false
	err = s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket([]byte(SinkBucket)).Get(binary.BigEndian.AppendUint64(nil, seq))
		if v == nil {
			return nil
		}
		found = true
		return json.Unmarshal(v, &m)
	})
	if err != nil {
		return SinkMessage{}, false, fmt.Errorf("mailer: sink: %w", err)
	}
	return m, found, nil
}

// Handler serves the inbox under prefix (default "/inbox"); mount it at
// prefix, prefix+"/" and prefix+".json" (the paths are matched whole, not
// stripped):
//
//	GET <prefix>        the inbox, newest first: to, subject, time, link;
//	                    ?since=<RFC 3339 time> first waits (MaxInboxWait at
//	                    most) for an email received at or after that time
//	                    (the page does not refresh itself: WCAG 2.2.1)
//	GET <prefix>/<id>   one email: headers, links, HTML (sandboxed), text
//	GET <prefix>.json   one page of emails as JSON ([]SinkMessage, newest
//	                    first): ?limit=&before=<id>&to=<address>&bodies=false,
//	                    the next page in the Link header (serveJSON)
func (s *Sink) Handler(prefix string) http.Handler {
	prefix = "/" + strings.Trim(prefix, "/")
	if prefix == "/" {
		prefix = "/inbox"
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		p := r.URL.Path
		switch {
		case p == prefix || p == prefix+"/":
			s.serveList(w, r, prefix)
		case p == prefix+".json":
			s.serveJSON(w, r)
		case strings.HasPrefix(p, prefix+"/"):
			s.serveMessage(w, r, prefix, strings.TrimPrefix(p, prefix+"/"))
		default:
			http.NotFound(w, r)
		}
	})
}

// The pages of GET <prefix>.json.
const (
	// DefaultPageSize is how many emails one page lists without ?limit=.
	DefaultPageSize = 50
	// MaxPageSize bounds ?limit=; a larger one lists this many.
	MaxPageSize = 500
)

// PageQuery selects one page of the inbox, newest first.
type PageQuery struct {
	// Limit is the most emails on the page (1..MaxPageSize).
	Limit int
	// Before lists only emails whose inbox id is below it; 0 starts with
	// the newest.
	Before uint64
	// To keeps only the emails to this address (case-insensitive); empty
	// keeps all.
	To string
}

// Page returns one page of stored messages, newest first, and the Before
// of the next page: 0 when this page is the last (a full page followed by
// no older email is the last too).
func (s *Sink) Page(q PageQuery) ([]SinkMessage, uint64, error) {
	if q.Limit <= 0 || q.Limit > MaxPageSize {
		q.Limit = MaxPageSize
	}
	var out []SinkMessage
	var next uint64
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket([]byte(SinkBucket)).Cursor()
		var k, v []byte
		if q.Before == 0 {
			k, v = c.Last()
		} else if k, v = c.Seek(binary.BigEndian.AppendUint64(nil, q.Before)); k == nil {
			k, v = c.Last()
		} else {
			k, v = c.Prev()
		}
		for ; k != nil; k, v = c.Prev() {
			if len(out) == q.Limit {
				next = binary.BigEndian.Uint64(k) + 1
				return nil
			}
			var m SinkMessage
			if err := json.Unmarshal(v, &m); err != nil {
				return fmt.Errorf("message %x: %w", k, err)
			}
			if q.To == "" || strings.EqualFold(m.To, q.To) {
				out = append(out, m)
			}
		}
		return nil
	})
	if err != nil {
		return nil, 0, fmt.Errorf("mailer: sink: %w", err)
	}
	return out, next, nil
}

// serveJSON serves one page of the inbox as a JSON array, newest first:
// ?limit= (default DefaultPageSize, at most MaxPageSize), ?before=<id>
// (the emails older than that inbox id), ?to= (one recipient),
// ?bodies=false (no text and html, for scripts that want the links). The
// next page, when there is one, is in the Link header (rel="next") and in
// X-Next-Before.
func (s *Sink) serveJSON(w http.ResponseWriter, r *http.Request) {
	qs := r.URL.Query()
	q := PageQuery{Limit: DefaultPageSize, To: qs.Get("to")}
	if v := qs.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			http.Error(w, "limit must be a positive integer", http.StatusBadRequest)
			return
		}
		q.Limit = min(n, MaxPageSize)
	}
	if v := qs.Get("before"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil || n == 0 {
			http.Error(w, "before must be an inbox id", http.StatusBadRequest)
			return
		}
		q.Before = n
	}
	bodies := true
	if v := qs.Get("bodies"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			http.Error(w, "bodies must be true or false", http.StatusBadRequest)
			return
		}
		bodies = b
	}
	msgs, next, err := s.Page(q)
	if err != nil {
		http.Error(w, "inbox unreadable", http.StatusInternalServerError)
		return
	}
	if msgs == nil {
		msgs = []SinkMessage{}
	}
	if !bodies {
		for i := range msgs {
			msgs[i].Text, msgs[i].HTML = "", ""
		}
	}
	if next != 0 {
		nq := url.Values{}
		for k, v := range qs {
			nq[k] = v
		}
		nq.Set("before", strconv.FormatUint(next, 10))
		nq.Set("limit", strconv.Itoa(q.Limit))
		w.Header().Set("Link", "<"+r.URL.Path+"?"+nq.Encode()+`>; rel="next"`)
		w.Header().Set("X-Next-Before", strconv.FormatUint(next, 10))
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(msgs)
}

// waitSince waits until the newest email was received at or after since,
// for MaxInboxWait at most (a request bound, in real time), and returns the
// inbox's newest 500 emails and whether the awaited one is among them.
func (s *Sink) waitSince(ctx context.Context, since time.Time) ([]SinkMessage, bool, error) {
	ctx, cancel := context.WithTimeout(ctx, MaxInboxWait)
	defer cancel()
	for {
		s.arrivedMu.Lock()
		arrived := s.arrived
		s.arrivedMu.Unlock()
		msgs, err := s.Messages(500)
		if err != nil || since.IsZero() || (len(msgs) > 0 && !msgs[0].At.Before(since)) {
			return msgs, err == nil, err
		}
		select {
		case <-arrived:
		case <-ctx.Done():
			return msgs, false, nil
		}
	}
}

func (s *Sink) serveList(w http.ResponseWriter, r *http.Request, prefix string) {
	var since time.Time
	if v := r.URL.Query().Get("since"); v != "" {
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			http.Error(w, "since: not an RFC 3339 time", http.StatusBadRequest)
			return
		}
		since = t
	}
	msgs, arrived, err := s.waitSince(r.Context(), since)
	if err != nil {
		http.Error(w, "inbox unreadable", http.StatusInternalServerError)
		return
	}
	rows := make([]inboxRow, 0, len(msgs))
	l := s.cat.ForPage(r.Header.Get("Accept-Language"), "")
	for _, m := range msgs {
		row := inboxRow{Href: prefix + "/" + m.ID, To: m.To, Subject: m.Subject, Lang: m.Lang(), When: l.Date(m.At.Local(), locale.DayClock)}
		if len(m.Links) > 0 {
			row.Link = m.Links[0]
		}
		rows = append(rows, row)
	}
	writePage(w, http.StatusOK, listTmpl, l.Code(), listPage{X: inboxTexts(l), Title: l.T("Inbox"), Self: prefix, JSON: prefix + ".json", Rows: rows, NoneYet: !arrived})
}

func (s *Sink) serveMessage(w http.ResponseWriter, r *http.Request, prefix, id string) {
	l := s.cat.ForPage(r.Header.Get("Accept-Language"), "")
	m, ok, err := s.Message(id)
	if err != nil {
		http.Error(w, "inbox unreadable", http.StatusInternalServerError)
		return
	}
	if !ok {
		writePage(w, http.StatusNotFound, notFoundTmpl, l.Code(), listPage{X: inboxTexts(l), Title: l.T("Not found"), Back: prefix})
		return
	}
	page := messagePage{X: inboxTexts(l), Title: m.Subject, Back: prefix, M: m, Lang: m.Lang(), Text: linkify(m.Text)}
	page.Headers = append(page.Headers,
		header{Name: "From", Value: m.From}, header{Name: "To", Value: m.To}, header{Name: "Reply-To", Value: orNone(l, m.ReplyTo)},
		header{Name: "Subject", Value: m.Subject, Lang: m.Lang()}, header{Name: "Date", Value: m.At.Format(time.RFC1123Z)},
		header{Name: "Message-ID", Value: m.MessageID})
	for _, k := range sortedKeys(m.Headers) {
		page.Headers = append(page.Headers, header{Name: k, Value: m.Headers[k]})
	}
	if m.HTML != "" {
		// Links inside the sandboxed frame open in the whole tab.
		page.SrcDoc = `<base target="_top">` + m.HTML
	}
	writePage(w, http.StatusOK, messageTmpl, l.Code(), page)
}

func orNone(l *locale.Lang, s string) string {
	if s == "" {
		return l.T("(none)")
	}
	return s
}
