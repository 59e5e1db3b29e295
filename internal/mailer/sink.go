package mailer

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/linkpipe/linkpipe/internal/clock"
	"github.com/linkpipe/linkpipe/internal/mail"
)

// SinkBucket is the bbolt bucket the Sink keeps its messages in.
const SinkBucket = "sink"

// Sink is the local mail driver (LINKPIPE_MAIL_DRIVER=sink, and the
// all-in-one dev mode): a Sender that keeps every message in the mailer's
// own bbolt file, and an inbox to read them (Handler).
type Sink struct {
	db    *bolt.DB
	clock clock.Clock

	mu sync.Mutex
	// arrived is closed (and replaced) whenever an email is stored, to wake
	// inbox requests waiting for one (?since=).
	arrived chan struct{}
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
	return &Sink{db: db, clock: clk, arrived: make(chan struct{})}, nil
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
	err := s.db.Batch(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte(SinkBucket))
		seq, err := b.NextSequence()
		if err != nil {
			return err
		}
		r := rec
		r.ID = strconv.FormatUint(seq, 10)
		r.MessageID = "sink-" + r.ID
		data, err := json.Marshal(r)
		if err != nil {
			return err
		}
		rec = r
		return b.Put(binary.BigEndian.AppendUint64(nil, seq), data)
	})
	if err != nil {
		return "", fmt.Errorf("mailer: sink: %w: %w", mail.ErrTransient, err)
	}
	s.mu.Lock()
	close(s.arrived)
	s.arrived = make(chan struct{})
	s.mu.Unlock()
	return rec.MessageID, nil
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
//	GET <prefix>.json   every email as JSON ([]SinkMessage, newest first);
//	                    ?to=<address> filters by recipient
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

func (s *Sink) serveJSON(w http.ResponseWriter, r *http.Request) {
	msgs, err := s.Messages(0)
	if err != nil {
		http.Error(w, "inbox unreadable", http.StatusInternalServerError)
		return
	}
	to := r.URL.Query().Get("to")
	out := make([]SinkMessage, 0, len(msgs))
	for _, m := range msgs {
		if to == "" || strings.EqualFold(m.To, to) {
			out = append(out, m)
		}
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(out)
}

// waitSince waits until the newest email was received at or after since,
// for MaxInboxWait at most (a request bound, in real time), and returns the
// inbox's newest 500 emails and whether the awaited one is among them.
func (s *Sink) waitSince(ctx context.Context, since time.Time) ([]SinkMessage, bool, error) {
	ctx, cancel := context.WithTimeout(ctx, MaxInboxWait)
	defer cancel()
	for {
		s.mu.Lock()
		arrived := s.arrived
		s.mu.Unlock()
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
	for _, m := range msgs {
		row := inboxRow{Href: prefix + "/" + m.ID, To: m.To, Subject: m.Subject, When: m.At.Local().Format("Mon 2 Jan 15:04:05")}
		if len(m.Links) > 0 {
			row.Link = m.Links[0]
		}
		rows = append(rows, row)
	}
	writePage(w, listTmpl, listPage{Title: "Inbox", Self: prefix, JSON: prefix + ".json", Rows: rows, NoneYet: !arrived})
}

func (s *Sink) serveMessage(w http.ResponseWriter, r *http.Request, prefix, id string) {
	m, ok, err := s.Message(id)
	if err != nil {
		http.Error(w, "inbox unreadable", http.StatusInternalServerError)
		return
	}
	if !ok {
		w.WriteHeader(http.StatusNotFound)
		writePage(w, notFoundTmpl, listPage{Title: "Not found", Back: prefix})
		return
	}
	page := messagePage{Title: m.Subject, Back: prefix, M: m, Text: linkify(m.Text)}
	page.Headers = append(page.Headers,
		header{"From", m.From}, header{"To", m.To}, header{"Reply-To", orNone(m.ReplyTo)},
		header{"Subject", m.Subject}, header{"Date", m.At.Format(time.RFC1123Z)}, header{"Message-ID", m.MessageID})
	for _, k := range sortedKeys(m.Headers) {
		page.Headers = append(page.Headers, header{k, m.Headers[k]})
	}
	if m.HTML != "" {
		// Links inside the sandboxed frame open in the whole tab.
		page.SrcDoc = `<base target="_top">` + m.HTML
	}
	writePage(w, messageTmpl, page)
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}
