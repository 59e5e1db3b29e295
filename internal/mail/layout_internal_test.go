package mail

import (
	htmltemplate "html/template"
	"strings"
	"testing"
	texttemplate "text/template"

	"github.com/linkpipe/linkpipe/internal/practice"
)

// The layout as it was written with text/template and html/template: the
// reference layout.go must match byte for byte.
var textTmpl = texttemplate.Must(texttemplate.New("text").Parse(strings.TrimLeft(`
{{.Greeting}}

{{range .Intro}}{{.}}

{{end}}{{if .URL}}{{.Button}}:
{{.URL}}

{{end}}{{range .Notes}}{{.}}

{{end}}--
{{.Footer}}
`, "\n")))

var htmlTmpl = htmltemplate.Must(htmltemplate.New("html").Parse(`<!DOCTYPE html>
<html lang="{{.Lang}}">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{.Subject}}</title>
</head>
<body style="margin:0;padding:0;background:#f4f5f7;font-family:-apple-system,BlinkMacSystemFont,'Segoe UI',Roboto,Helvetica,Arial,sans-serif;color:#1f2933;">
<span style="display:none;max-height:0;overflow:hidden;opacity:0;">{{.Preheader}}</span>
<table role="presentation" width="100%" cellpadding="0" cellspacing="0" style="background:#f4f5f7;padding:24px 0;">
<tr><td align="center">
<table role="presentation" width="100%" cellpadding="0" cellspacing="0" style="max-width:560px;background:#ffffff;border-radius:8px;padding:32px;">
<tr><td>
{{if .Logo}}<p style="margin:0 0 24px;"><img src="{{.Logo}}" alt="{{.Practice}}" height="48" style="display:block;height:48px;width:auto;max-width:100%;border:0;"></p>
{{else}}<p style="margin:0 0 24px;font-size:14px;color:#52606d;font-weight:600;">{{.Practice}}</p>
{{end}}
<p style="margin:0 0 16px;font-size:16px;line-height:1.5;">{{.Greeting}}</p>
{{range .Intro}}<p style="margin:0 0 16px;font-size:16px;line-height:1.5;">{{.}}</p>
{{end}}{{if .URL}}<p style="margin:24px 0;"><a href="{{.URL}}" style="display:inline-block;background:{{.Accent}};color:#ffffff;text-decoration:none;font-size:16px;font-weight:600;padding:12px 24px;border-radius:6px;">{{.Button}}</a></p>
<p style="margin:0 0 16px;font-size:13px;line-height:1.5;color:#52606d;">{{.CopyHint}}<br><a href="{{.URL}}" style="color:{{.Accent}};word-break:break-all;">{{.URL}}</a></p>
{{end}}{{range .Notes}}<p style="margin:0 0 16px;font-size:14px;line-height:1.5;color:#323f4b;">{{.}}</p>
{{end}}<hr style="border:none;border-top:1px solid #e4e7eb;margin:24px 0 16px;">
<p style="margin:0;font-size:12px;line-height:1.5;color:#52606d;">{{.Footer}}</p>
</td></tr>
</table>
</td></tr>
</table>
</body>
</html>
`))

// viaTemplates lays c out with the reference templates.
func viaTemplates(t testing.TB, c *content) (text, html string) {
	t.Helper()
	var tb, hb strings.Builder
	if err := textTmpl.Execute(&tb, c); err != nil {
		t.Fatal(err)
	}
	if err := htmlTmpl.Execute(&hb, c); err != nil {
		t.Fatal(err)
	}
	return tb.String(), hb.String()
}

// compareLayouts fails t if layout.go and the templates lay c out
// differently.
func compareLayouts(t testing.TB, c *content) {
	t.Helper()
	wantText, wantHTML := viaTemplates(t, c)
	var tb, hb strings.Builder
	writeText(&tb, c)
	writeHTML(&hb, c)
	if got := tb.String(); got != wantText {
		t.Errorf("text of %+v:\n got %q\nwant %q", c, got, wantText)
	}
	if got := hb.String(); got != wantHTML {
		t.Errorf("HTML of %+v:\n got %q\nwant %q", c, got, wantHTML)
	}
}

// hostile are values that html/template escapes in one context or another.
var hostile = []string{
	"", "plain", "Acme & Co", `"quoted" and 'single'`, "a+b=c", "<script>alert(1)</script>", "</title><b>",
	"nul\x00byte", "invalid \xff\xfe utf-8", "caf\u00e9 \u201cquoted\u201d \u2013 \U0001F600", "line\r\nbreak\ttab",
	"&amp; already", "\ufdd0\ufffe noncharacters", "100% sure %41 %zz %", "{{.Greeting}}", "`backtick`",
}

// hostileURLs are values for href and src: schemes html/template refuses,
// characters it percent-encodes or escapes, escapes it keeps.
var hostileURLs = []string{
	"https://portal.example/l/abc_DEF-123", "http://x.example/a?b=c&d=e+f#frag", "HTTPS://UP.example/",
	"javascript:alert(1)", "JavaScript:alert(1)", "data:text/html,<b>", "vbscript:x", "mailto:a@b.example",
	"/relative/path?x=1", "relative:colon/after", "//proto-relative.example/x", "https://x.example/%41%4g%",
	"https://x.example/a b\"c'd<e>f`g{h}i|j\\k^l", "https://x.example/caf\u00e9/\xff", "https://x.example/!$*,;:@[]~",
	"https://x.example/(parens)", "", ":", "https:", "%", "%4",
}

// TestLayoutIsTheTemplates: for realistic and hostile contents, layout.go
// writes the bytes the templates it replaced write.
func TestLayoutIsTheTemplates(t *testing.T) {
	base := content{
		Lang: "en", Subject: "Your sign-in link for Acme & Co (valid until Tue 24 Nov, 14:05 UTC)",
		Preheader: "Sign in to Acme & Co.", Greeting: "Hello Ana,", Intro: []string{"Here is your link."},
		Button: "Sign in to Acme & Co", URL: "https://portal.example/l/abc_DEF-123", CopyHint: "Copy this:",
		Notes: []string{"It works once.", "Ignore it if you did not ask."}, Practice: "Acme & Co",
		Accent: practice.DefaultAccent, Footer: "Sent by Acme & Co.",
	}
	compareLayouts(t, &base)
	noLink := base
	noLink.URL, noLink.Button, noLink.Intro, noLink.Notes = "", "", nil, nil
	compareLayouts(t, &noLink)
	for _, s := range hostile {
		c := base
		c.Lang, c.Subject, c.Preheader, c.Greeting, c.Button, c.CopyHint, c.Practice, c.Footer = s, s, s, s, s, s, s, s
		c.Intro, c.Notes = []string{s, s}, []string{s}
		compareLayouts(t, &c)
	}
	for _, u := range hostileURLs {
		c := base
		c.URL, c.Logo = u, u
		compareLayouts(t, &c)
	}
	for _, accent := range []string{"#1f6feb", "#ABC", "#abcd", "#1f6feb80", practice.Accessible("#7fd3ff", practice.DefaultAccent)} {
		c := base
		c.Accent = accent
		compareLayouts(t, &c)
	}
}

// TestColorIsStricterThanTheTemplate: a colour other than a hex one (never
// the case: the accent is practice.Accessible's #rrggbb) is refused, where
// html/template let some CSS values through.
func TestColorIsStricterThanTheTemplate(t *testing.T) {
	for _, c := range []string{"", "red", "#12", "#12345", "#ggg", "#1f6feb;background:url(x)", "expression(alert(1))", "#1f6feb\x00"} {
		var b strings.Builder
		writeColor(&b, c)
		if b.String() != "ZgotmplZ" {
			t.Errorf("colour %q written as %q, want ZgotmplZ", c, b.String())
		}
	}
}

// FuzzLayoutIsTheTemplates: any content is laid out as the templates lay
// it out, each field fuzzed on its own; a colour is one writeColor takes
// (#rgb … #rrggbbaa) as it is, anything else through practice.Accessible,
// as the renderers' accent always is. Run with -fuzz to search further
// than the seeds.
func FuzzLayoutIsTheTemplates(f *testing.F) {
	for i, s := range hostile {
		u := hostileURLs[i%len(hostileURLs)]
		f.Add("en", s, s, s+"|"+s, s, u, s, s, s, u, "#7fd3ff", s)
		f.Add(s, "Subject", s, "", "", "", "", s+"|", s, "", "#abc", "")
		f.Add("es", s, "Hola,", s, "Entrar", u, "Copie:", "", "Acme", s, "#1f6feb80", s)
	}
	f.Fuzz(func(t *testing.T, lang, subject, greeting, paras, button, link, hint, notes, practiceName, logo, accent, footer string) {
		split := func(s string) []string {
			if s == "" {
				return nil
			}
			return strings.Split(s, "|")
		}
		var b strings.Builder
		if writeColor(&b, accent); b.String() == "ZgotmplZ" {
			accent = practice.Accessible(accent, practice.DefaultAccent)
		}
		c := content{
			Lang: lang, Subject: subject, Preheader: subject + greeting, Greeting: greeting, Intro: split(paras),
			Button: button, URL: link, CopyHint: hint, Notes: split(notes), Practice: practiceName, Logo: logo,
			Accent: accent, Footer: footer,
		}
		compareLayouts(t, &c)
	})
}

func BenchmarkLayout(b *testing.B) {
	c := content{
		Lang: "en", Subject: "Your sign-in link for Acme & Co (valid until Tue 24 Nov, 14:05 UTC)",
		Greeting: "Hello Ana,", Intro: []string{"Here is your link."}, Button: "Sign in",
		URL: "https://portal.example/l/abc_DEF-123", Notes: []string{"It works once."}, Practice: "Acme & Co",
		Accent: practice.DefaultAccent, Footer: "Sent by Acme & Co.",
	}
	b.Run("handwritten", func(b *testing.B) {
		for b.Loop() {
			var tb, hb strings.Builder
			writeText(&tb, &c)
			writeHTML(&hb, &c)
		}
	})
	b.Run("templates", func(b *testing.B) {
		for b.Loop() {
			viaTemplates(b, &c)
		}
	})
}
