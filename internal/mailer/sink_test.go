package mailer_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/linkpipe/linkpipe/internal/clock"
	"github.com/linkpipe/linkpipe/internal/mail"
	"github.com/linkpipe/linkpipe/internal/mailer"
	"github.com/linkpipe/linkpipe/internal/store"
	"github.com/linkpipe/linkpipe/internal/store/storetest"
)

func newSink(t *testing.T) *mailer.Sink {
	t.Helper()
	s, err := mailer.NewSink(storetest.MustOpen(t, "mailer"), clock.NewFake(t0))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// serveInbox mounts the inbox the way the all-in-one does, under a prefix,
// next to a /target page the emails link to.
func serveInbox(t *testing.T, s *mailer.Sink, prefix string) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	h := s.Handler(prefix)
	mux.Handle(prefix, h)
	mux.Handle(prefix+"/", h)
	mux.Handle(prefix+".json", h)
	mux.HandleFunc("/target", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		io.WriteString(w, "<!DOCTYPE html><title>TARGET</title><p>landed</p>")
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

func get(t *testing.T, url string) (int, http.Header, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

func send(t *testing.T, s *mailer.Sink, m *mail.Message) string {
	t.Helper()
	id, err := s.Send(context.Background(), m)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func TestInbox(t *testing.T) {
	s := newSink(t)
	srv := serveInbox(t, s, "/dev/inbox")
	target := srv.URL + "/target"
	if id := send(t, s, &mail.Message{From: "links@acme.example", To: "first@example.com", Subject: "First",
		Text: "one", HTML: "<p>one</p>"}); id != "sink-1" {
		t.Fatalf("message id %q", id)
	}
	send(t, s, &mail.Message{From: "links@acme.example", To: "pat@example.com", ReplyTo: "desk@acme.example",
		Subject: "Sign in <script>alert(1)</script>", Text: "Hello\n" + target + "\nbye",
		HTML: `<p>Hello <a href="` + target + `">Sign in</a></p>`, Headers: map[string]string{mail.HeaderMailID: "L1-signin"}})

	code, hdr, body := get(t, srv.URL+"/dev/inbox")
	if code != 200 || !strings.Contains(hdr.Get("Content-Security-Policy"), "default-src 'none'") {
		t.Fatalf("list: %d %v", code, hdr)
	}
	second, first := strings.Index(body, "Sign in &lt;script&gt;"), strings.Index(body, ">First<")
	if second < 0 || first < 0 || second > first {
		t.Fatalf("list is not newest first or not escaped:\n%s", body)
	}
	if strings.Contains(body, "<script>") || !strings.Contains(body, `href="/dev/inbox/2"`) ||
		!strings.Contains(body, "pat@example.com") || !strings.Contains(body, `href="`+target+`"`) {
		t.Fatalf("list:\n%s", body)
	}

	code, _, body = get(t, srv.URL+"/dev/inbox/2")
	if code != 200 {
		t.Fatalf("message: %d", code)
	}
	for _, want := range []string{"desk@acme.example", "X-Linkpipe-Mail-ID", "L1-signin", `sandbox="`, `srcdoc="&lt;base target=&#34;_top&#34;&gt;&lt;p&gt;Hello`,
		`<a href="` + target + `">` + target + `</a>`, `href="/dev/inbox"`} {
		if !strings.Contains(body, want) {
			t.Errorf("message page lacks %q", want)
		}
	}
	if strings.Contains(body, "<script>") {
		t.Error("subject not escaped on the message page")
	}

	code, hdr, body = get(t, srv.URL+"/dev/inbox.json")
	if code != 200 || hdr.Get("Content-Type") != "application/json" {
		t.Fatalf("json: %d %v", code, hdr)
	}
	var list []map[string]any
	if err := json.Unmarshal([]byte(body), &list); err != nil || len(list) != 2 {
		t.Fatalf("json: %v %s", err, body)
	}
	m := list[0]
	if m["id"] != "2" || m["to"] != "pat@example.com" || m["reply_to"] != "desk@acme.example" ||
		m["text"] != "Hello\n"+target+"\nbye" || !strings.Contains(m["html"].(string), "Sign in") ||
		m["mail_id"] != "L1-signin" || m["links"].([]any)[0] != target || m["at"] != t0.Format(time.RFC3339) {
		t.Errorf("json entry %v", m)
	}
	_, _, body = get(t, srv.URL+"/dev/inbox.json?to=first@example.com")
	if err := json.Unmarshal([]byte(body), &list); err != nil || len(list) != 1 || list[0]["subject"] != "First" {
		t.Errorf("filtered json: %s", body)
	}

	for _, p := range []string{"/dev/inbox/3", "/dev/inbox/abc", "/dev/inboxes"} {
		if code, _, _ := get(t, srv.URL+p); code != 404 {
			t.Errorf("%s: %d, want 404", p, code)
		}
	}
	resp, err := http.Post(srv.URL+"/dev/inbox", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST: %d", resp.StatusCode)
	}
}

func TestInboxKeepsMessagesAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	db, err := store.Open(dir, "mailer")
	if err != nil {
		t.Fatal(err)
	}
	s, _ := mailer.NewSink(db, nil)
	send(t, s, &mail.Message{To: "pat@example.com", Subject: "kept", Text: "x"})
	db.Close()
	db, err = store.Open(dir, "mailer")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	s, _ = mailer.NewSink(db, nil)
	msgs, err := s.Messages(0)
	if err != nil || len(msgs) != 1 || msgs[0].Subject != "kept" {
		t.Fatalf("%v %v", msgs, err)
	}
	if id := send(t, s, &mail.Message{To: "pat@example.com", Subject: "next", Text: "y"}); id != "sink-2" {
		t.Fatalf("ids restart: %s", id)
	}
}

// TestInboxLinkClickableInChromium opens an email in the inbox with a real
// headless Chromium and clicks the button inside the sandboxed HTML frame:
// the whole tab must land on the link's page.
func TestInboxLinkClickableInChromium(t *testing.T) {
	const chromium = "/usr/bin/chromium"
	if _, err := os.Stat(chromium); err != nil {
		t.Skip("chromium is not installed at " + chromium)
	}
	s := newSink(t)
	srv := serveInbox(t, s, "/inbox")
	target := srv.URL + "/target?t=k1.abc"
	send(t, s, &mail.Message{From: "links@acme.example", To: "pat@example.com", Subject: "Sign in",
		Text: target, HTML: `<p>Hello</p><p><a id="btn" href="` + target + `">Sign in</a></p>`})

	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(chromium),
		chromedp.NoSandbox, chromedp.Flag("disable-gpu", true),
		// Keep the sandboxed frame in the page's process so FromNode reaches it
		// (Chrome otherwise isolates sandboxed frames into their own target).
		chromedp.Flag("disable-features", "Translate,BlinkGenPropertyTrees,IsolateSandboxedIframes"))
	actx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancel()
	bctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	if err := chromedp.Do(bctx, chromedp.Navigate(srv.URL+"/inbox/1")); err != nil {
		t.Fatal(err)
	}
	tctx, cancel := context.WithTimeout(bctx, 20*time.Second)
	defer cancel()
	frames, err := chromedp.Run(tctx, chromedp.Nodes(chromedp.CSS("iframe")))
	if err != nil || len(frames) != 1 {
		t.Fatalf("iframe: %v %v", frames, err)
	}
	if err := chromedp.Do(tctx,
		chromedp.WaitVisible(chromedp.CSS("#btn"), chromedp.FromNode(frames[0])),
		chromedp.Click(chromedp.CSS("#btn"), chromedp.FromNode(frames[0])),
	); err != nil {
		t.Fatalf("the link inside the email frame: %v", err)
	}
	// The click navigates the whole tab; read its location until it lands.
	var location string
	for tctx.Err() == nil {
		location, _ = chromedp.Run(tctx, chromedp.Location())
		if location == target {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	title, err := chromedp.Run(tctx, chromedp.Title())
	if location != target || title != "TARGET" {
		t.Fatalf("the tab is at %q titled %q (%v), want the link %s", location, title, err, target)
	}
}

// TestInboxJSONPages (issue #11: "/inbox.json returns every email with
// full bodies, 75 MB for 16,000 emails"): the JSON lists one page, newest
// first, ?limit= (default 50, at most 500) and ?before= walk it through the
// Link header's next page, ?bodies=false leaves the bodies out, ?to= still
// filters, and a bad parameter is a 400.
func TestInboxJSONPages(t *testing.T) {
	s := newSink(t)
	srv := serveInbox(t, s, "/inbox")
	const n = 120
	for i := range n {
		to := "pat@example.com"
		if i%3 == 0 {
			to = "sam@example.com"
		}
		send(t, s, &mail.Message{To: to, Subject: "m" + strconv.Itoa(i+1), Text: "see https://links.example/l/" + strconv.Itoa(i+1), HTML: "<p>big body</p>"})
	}
	page := func(url string) ([]mailer.SinkMessage, string) {
		t.Helper()
		code, hdr, body := get(t, url)
		if code != 200 {
			t.Fatalf("GET %s: %d %s", url, code, body)
		}
		var list []mailer.SinkMessage
		if err := json.Unmarshal([]byte(body), &list); err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
		next := ""
		if l := hdr.Get("Link"); l != "" {
			var ok bool
			if next, ok = strings.CutPrefix(l, "<"); !ok || !strings.HasSuffix(next, `>; rel="next"`) {
				t.Fatalf("Link %q", l)
			}
			next = srv.URL + strings.TrimSuffix(next, `>; rel="next"`)
		}
		return list, next
	}

	list, next := page(srv.URL + "/inbox.json")
	if len(list) != mailer.DefaultPageSize || list[0].ID != strconv.Itoa(n) || list[0].Text == "" || list[0].HTML == "" || next == "" {
		t.Fatalf("first page: %d emails, first %q, next %q; want the newest %d with bodies and a next page", len(list), list[0].ID, next, mailer.DefaultPageSize)
	}
	// Walking the pages lists every email once, newest first.
	var ids []string
	for url := srv.URL + "/inbox.json?limit=7&bodies=false"; url != ""; {
		list, url = page(url)
		for _, m := range list {
			if m.Text != "" || m.HTML != "" || len(m.Links) != 1 {
				t.Fatalf("bodies=false: %+v", m)
			}
			ids = append(ids, m.ID)
		}
	}
	if len(ids) != n || ids[0] != strconv.Itoa(n) || ids[n-1] != "1" {
		t.Fatalf("walked %d emails (%v), want %d newest first", len(ids), ids, n)
	}
	for i := 1; i < len(ids); i++ {
		a, _ := strconv.Atoi(ids[i-1])
		b, _ := strconv.Atoi(ids[i])
		if b != a-1 {
			t.Fatalf("ids %v not newest first without gaps", ids)
		}
	}
	list, _ = page(srv.URL + "/inbox.json?before=11&limit=3")
	if len(list) != 3 || list[0].ID != "10" || list[2].ID != "8" {
		t.Errorf("before=11&limit=3: %v", list)
	}
	list, next = page(srv.URL + "/inbox.json?limit=100000")
	if len(list) != n || next != "" {
		t.Errorf("limit=100000: %d emails, next %q; want all %d (under the maximum) and no next page", len(list), next, n)
	}
	// The filter applies before the page is cut.
	var sam []string
	for url := srv.URL + "/inbox.json?to=SAM@example.com&limit=15"; url != ""; {
		list, url = page(url)
		for _, m := range list {
			if m.To != "sam@example.com" {
				t.Fatalf("to= filter: %+v", m)
			}
			sam = append(sam, m.ID)
		}
	}
	if len(sam) != n/3 {
		t.Errorf("to= filter walked %d emails, want %d", len(sam), n/3)
	}
	for _, q := range []string{"limit=0", "limit=x", "before=abc", "before=0", "bodies=maybe"} {
		if code, _, _ := get(t, srv.URL+"/inbox.json?"+q); code != http.StatusBadRequest {
			t.Errorf("?%s: %d, want 400", q, code)
		}
	}
}

// TestInboxJSONMaxPage: at most MaxPageSize emails on one page.
func TestInboxJSONMaxPage(t *testing.T) {
	s := newSink(t)
	srv := serveInbox(t, s, "/inbox")
	for range mailer.MaxPageSize + 1 {
		send(t, s, &mail.Message{To: "pat@example.com", Subject: "s", Text: "x"})
	}
	_, hdr, body := get(t, srv.URL+"/inbox.json?limit=100000&bodies=false")
	var list []mailer.SinkMessage
	if err := json.Unmarshal([]byte(body), &list); err != nil || len(list) != mailer.MaxPageSize || hdr.Get("X-Next-Before") != "2" {
		t.Fatalf("%d emails, next %q (%v); want %d and the oldest on the next page", len(list), hdr.Get("X-Next-Before"), err, mailer.MaxPageSize)
	}
}

// TestSinkStoresConcurrentSendsOnce: the group commit stores every one of
// many concurrent sends exactly once, each under its own inbox id.
func TestSinkStoresConcurrentSendsOnce(t *testing.T) {
	s := newSink(t)
	const senders, each = 16, 25
	ids := make(chan string, senders*each)
	var wg sync.WaitGroup
	for g := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				id, err := s.Send(context.Background(), &mail.Message{To: "pat@example.com", Subject: fmt.Sprintf("%d-%d", g, i), Text: "x"})
				if err != nil {
					t.Error(err)
					return
				}
				ids <- id
			}
		}()
	}
	wg.Wait()
	close(ids)
	seen := map[string]bool{}
	for id := range ids {
		if seen[id] {
			t.Fatalf("id %s given twice", id)
		}
		seen[id] = true
	}
	msgs, err := s.Messages(0)
	if err != nil || len(msgs) != senders*each || len(seen) != senders*each {
		t.Fatalf("%d stored, %d ids (%v), want %d", len(msgs), len(seen), err, senders*each)
	}
	subjects := map[string]bool{}
	for _, m := range msgs {
		if !seen[m.MessageID] || subjects[m.Subject] {
			t.Fatalf("stored %+v: unknown id or stored twice", m)
		}
		subjects[m.Subject] = true
	}
}
