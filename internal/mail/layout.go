package mail

import (
	"strings"
)

// The layout of every email: one plain-text and one HTML body around a
// content. It is written by hand rather than by text/template and
// html/template, which spent most of a render in reflection (about 60 µs
// and 200 allocations of an email, docs/performance.md). The escaping is
// html/template's, context by context: TestLayoutIsTheTemplates and
// FuzzLayoutIsTheTemplates (layout_internal_test.go) keep both bodies byte
// for byte what the templates there, the former layout, write for the same
// content. The one difference is on purpose: a colour that is not #rgb …
// #rrggbbaa becomes html/template's failsafe "ZgotmplZ" where the template
// would have let other CSS values through (the accent is always #rrggbb,
// practice.Accessible).

// writeText writes the plain-text body.
func writeText(b *strings.Builder, c *content) {
	b.WriteString(c.Greeting)
	b.WriteString("\n\n")
	for _, p := range c.Intro {
		b.WriteString(p)
		b.WriteString("\n\n")
	}
	if c.URL != "" {
		b.WriteString(c.Button)
		b.WriteString(":\n")
		b.WriteString(c.URL)
		b.WriteString("\n\n")
	}
	for _, n := range c.Notes {
		b.WriteString(n)
		b.WriteString("\n\n")
	}
	b.WriteString("--\n")
	b.WriteString(c.Footer)
	b.WriteString("\n")
}

// The HTML body's fixed parts, between the values.
const (
	htmlHead = "<!DOCTYPE html>\n<html lang=\""
	htmlMeta = "\">\n<head>\n<meta charset=\"utf-8\">\n" +
		"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>"
	htmlBody = "</title>\n</head>\n" +
		"<body style=\"margin:0;padding:0;background:#f4f5f7;font-family:-apple-system,BlinkMacSystemFont,'Segoe UI',Roboto,Helvetica,Arial,sans-serif;color:#1f2933;\">\n" +
		"<span style=\"display:none;max-height:0;overflow:hidden;opacity:0;\">"
	htmlTables = "</span>\n" +
		"<table role=\"presentation\" width=\"100%\" cellpadding=\"0\" cellspacing=\"0\" style=\"background:#f4f5f7;padding:24px 0;\">\n" +
		"<tr><td align=\"center\">\n" +
		"<table role=\"presentation\" width=\"100%\" cellpadding=\"0\" cellspacing=\"0\" style=\"max-width:560px;background:#ffffff;border-radius:8px;padding:32px;\">\n" +
		"<tr><td>\n"
	htmlLogo     = "<p style=\"margin:0 0 24px;\"><img src=\""
	htmlLogoAlt  = "\" alt=\""
	htmlLogoEnd  = "\" height=\"48\" style=\"display:block;height:48px;width:auto;max-width:100%;border:0;\"></p>\n"
	htmlName     = "<p style=\"margin:0 0 24px;font-size:14px;color:#52606d;font-weight:600;\">"
	htmlNameEnd  = "</p>\n"
	htmlGreeting = "\n<p style=\"margin:0 0 16px;font-size:16px;line-height:1.5;\">"
	htmlIntro    = "<p style=\"margin:0 0 16px;font-size:16px;line-height:1.5;\">"
	htmlParaEnd  = "</p>\n"
	htmlButton   = "<p style=\"margin:24px 0;\"><a href=\""
	htmlButtonBg = "\" style=\"display:inline-block;background:"
	htmlButtonSt = ";color:#ffffff;text-decoration:none;font-size:16px;font-weight:600;padding:12px 24px;border-radius:6px;\">"
	htmlButtonEn = "</a></p>\n<p style=\"margin:0 0 16px;font-size:13px;line-height:1.5;color:#52606d;\">"
	htmlCopy     = "<br><a href=\""
	htmlCopySt   = "\" style=\"color:"
	htmlCopyWb   = ";word-break:break-all;\">"
	htmlCopyEnd  = "</a></p>\n"
	htmlNote     = "<p style=\"margin:0 0 16px;font-size:14px;line-height:1.5;color:#323f4b;\">"
	htmlFooter   = "<hr style=\"border:none;border-top:1px solid #e4e7eb;margin:24px 0 16px;\">\n" +
		"<p style=\"margin:0;font-size:12px;line-height:1.5;color:#52606d;\">"
	htmlEnd = "</p>\n</td></tr>\n</table>\n</td></tr>\n</table>\n</body>\n</html>\n"
)

// writeHTML writes the HTML body: every value escaped for where it goes
// (text and attributes: escapeHTML; href and src: writeURL; the button's
// colour: writeColor).
func writeHTML(b *strings.Builder, c *content) {
	b.WriteString(htmlHead)
	escapeHTML(b, c.Lang)
	b.WriteString(htmlMeta)
	escapeHTML(b, c.Subject)
	b.WriteString(htmlBody)
	escapeHTML(b, c.Preheader)
	b.WriteString(htmlTables)
	if c.Logo != "" {
		b.WriteString(htmlLogo)
		writeURL(b, c.Logo)
		b.WriteString(htmlLogoAlt)
		escapeHTML(b, c.Practice)
		b.WriteString(htmlLogoEnd)
	} else {
		b.WriteString(htmlName)
		escapeHTML(b, c.Practice)
		b.WriteString(htmlNameEnd)
	}
	b.WriteString(htmlGreeting)
	escapeHTML(b, c.Greeting)
	b.WriteString(htmlParaEnd)
	for _, p := range c.Intro {
		b.WriteString(htmlIntro)
		escapeHTML(b, p)
		b.WriteString(htmlParaEnd)
	}
	if c.URL != "" {
		b.WriteString(htmlButton)
		writeURL(b, c.URL)
		b.WriteString(htmlButtonBg)
		writeColor(b, c.Accent)
		b.WriteString(htmlButtonSt)
		escapeHTML(b, c.Button)
		b.WriteString(htmlButtonEn)
		escapeHTML(b, c.CopyHint)
		b.WriteString(htmlCopy)
		writeURL(b, c.URL)
		b.WriteString(htmlCopySt)
		writeColor(b, c.Accent)
		b.WriteString(htmlCopyWb)
		escapeHTML(b, c.URL)
		b.WriteString(htmlCopyEnd)
	}
	for _, n := range c.Notes {
		b.WriteString(htmlNote)
		escapeHTML(b, n)
		b.WriteString(htmlParaEnd)
	}
	b.WriteString(htmlFooter)
	escapeHTML(b, c.Footer)
	b.WriteString(htmlEnd)
}

// escapeHTML writes s escaped for HTML text, RCDATA (<title>) and quoted
// attribute values, as html/template does in each: the five characters
// that can end or start markup or an entity, '+' (UTF-7), and NUL as
// U+FFFD. Other bytes, invalid UTF-8 included, are written as they are.
func escapeHTML(b *strings.Builder, s string) {
	written := 0
	for i := 0; i < len(s); i++ {
		var repl string
		switch s[i] {
		case 0:
			repl = "\uFFFD"
		case '"':
			repl = "&#34;"
		case '&':
			repl = "&amp;"
		case '\'':
			repl = "&#39;"
		case '+':
			repl = "&#43;"
		case '<':
			repl = "&lt;"
		case '>':
			repl = "&gt;"
		default:
			continue
		}
		b.WriteString(s[written:i])
		b.WriteString(repl)
		written = i + 1
	}
	b.WriteString(s[written:])
}

// writeURL writes u for a quoted href or src, as html/template does: a URL
// whose scheme is not http, https or mailto becomes "#ZgotmplZ"; bytes a
// URL may not hold are percent-encoded (an existing %XX is kept); then '&'
// and '+', which a URL may hold, are escaped for the attribute.
func writeURL(b *strings.Builder, u string) {
	if scheme, _, ok := strings.Cut(u, ":"); ok && !strings.Contains(scheme, "/") &&
		!strings.EqualFold(scheme, "http") && !strings.EqualFold(scheme, "https") && !strings.EqualFold(scheme, "mailto") {
		b.WriteString("#ZgotmplZ")
		return
	}
	const hex = "0123456789abcdef"
	for i := 0; i < len(u); i++ {
		c := u[i]
		switch {
		case c == '&':
			b.WriteString("&amp;")
		case c == '+':
			b.WriteString("&#43;")
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9',
			strings.IndexByte("-._~!#$*,/:;=?@[]", c) >= 0,
			c == '%' && i+2 < len(u) && isHex(u[i+1]) && isHex(u[i+2]):
			b.WriteByte(c)
		default:
			b.WriteByte('%')
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&0xf])
		}
	}
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// writeColor writes a CSS colour for a style attribute: #rgb, #rgba,
// #rrggbb or #rrggbbaa as it is (html/template lets those through
// unchanged), anything else as html/template's failsafe "ZgotmplZ".
func writeColor(b *strings.Builder, c string) {
	ok := len(c) == 4 || len(c) == 5 || len(c) == 7 || len(c) == 9
	ok = ok && c[0] == '#'
	for i := 1; ok && i < len(c); i++ {
		ok = isHex(c[i])
	}
	if !ok {
		b.WriteString("ZgotmplZ")
		return
	}
	b.WriteString(c)
}
