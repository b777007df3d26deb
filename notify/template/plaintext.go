package template

import (
	"strconv"
	"strings"

	"golang.org/x/net/html"
)

// PlainText converts an HTML e-mail body into its plain-text alternative:
// it drops tags, the head, scripts and styles; decodes entities; collapses
// runs of whitespace (except inside pre); turns block elements (p, div,
// headings, lists, tables, br) into line breaks; writes list items as
// "- item" or "1. item"; keeps image alt text; and keeps link targets as
// "text (https://…)" (only the target when the text is empty or already
// says it; fragment-only and javascript: links keep just their text).
func PlainText(src string) string {
	if src == "" {
		return ""
	}
	p := textWriter{}
	z := html.NewTokenizer(strings.NewReader(src))
	var (
		skip  int    // depth inside head, script, style, …
		pre   int    // depth inside pre
		links []link // open <a> elements
		lists []int  // open lists: -1 for ul, the next number for ol
	)
	for {
		tt := z.Next()
		if tt == html.ErrorToken {
			break // io.EOF or a read error of a strings.Reader: done
		}
		var name string
		var hasAttr bool
		if tt == html.StartTagToken || tt == html.SelfClosingTagToken || tt == html.EndTagToken {
			n, more := z.TagName()
			name, hasAttr = tagName(n), more
		}
		switch tt {
		case html.TextToken:
			if skip > 0 {
				continue
			}
			if pre > 0 {
				p.raw(string(z.Text()))
			} else {
				p.text(string(z.Text()))
			}
		case html.StartTagToken, html.SelfClosingTagToken:
			if skipped(name) {
				if tt == html.StartTagToken {
					skip++
				}
				continue
			}
			if name == "body" {
				skip = 0 // a head left unclosed
			}
			if skip > 0 {
				continue
			}
			switch name {
			case "br":
				p.newline(1)
			case "hr":
				p.newline(2)
				p.raw("----")
				p.newline(2)
			case "p", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "table", "pre", "address", "figure":
				p.newline(2)
				if name == "pre" && tt == html.StartTagToken {
					pre++
				}
			case "ul", "ol":
				p.newline(2)
				if tt == html.StartTagToken {
					n := -1
					if name == "ol" {
						n = 1
						if s, ok := attr(z, hasAttr, "start"); ok {
							if v, err := strconv.Atoi(s); err == nil {
								n = v
							}
						}
					}
					lists = append(lists, n)
				}
			case "li":
				p.newline(1)
				bullet := "- "
				if k := len(lists) - 1; k >= 0 && lists[k] >= 0 {
					bullet = strconv.Itoa(lists[k]) + ". "
					lists[k]++
				}
				p.raw(bullet)
				p.space = false
			case "div", "tr", "section", "article", "header", "footer", "nav", "main", "dl", "dt", "dd", "center", "caption":
				p.newline(1)
			case "td", "th":
				p.space = true
			case "img":
				if alt, ok := attr(z, hasAttr, "alt"); ok {
					p.text(alt)
				}
			case "a":
				if tt == html.StartTagToken {
					href, _ := attr(z, hasAttr, "href")
					links = append(links, link{href: strings.TrimSpace(href), start: p.b.Len()})
				}
			}
		case html.EndTagToken:
			if skipped(name) {
				if skip > 0 {
					skip--
				}
				continue
			}
			if skip > 0 {
				continue
			}
			switch name {
			case "p", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "table", "address", "figure":
				p.newline(2)
			case "pre":
				if pre > 0 {
					pre--
				}
				p.newline(2)
			case "ul", "ol":
				if len(lists) > 0 {
					lists = lists[:len(lists)-1]
				}
				p.newline(2)
			case "div", "tr", "li", "section", "article", "header", "footer", "nav", "main", "dl", "dt", "dd", "center", "caption":
				p.newline(1)
			case "a":
				if len(links) == 0 {
					continue
				}
				l := links[len(links)-1]
				links = links[:len(links)-1]
				p.linkTarget(l)
			}
		}
	}
	return p.String()
}

// skipped reports the elements whose content is not part of the text.
func skipped(name string) bool {
	switch name {
	case "head", "title", "script", "style", "noscript", "template", "svg", "object":
		return true
	}
	return false
}

type link struct {
	href  string
	start int // output offset when the link opened
}

// attr returns the attribute key of the current tag. It consumes the
// tag's attributes, so call it once per tag.
func attr(z *html.Tokenizer, more bool, key string) (string, bool) {
	for more {
		var k, v []byte
		k, v, more = z.TagAttr()
		if string(k) == key {
			return string(v), true
		}
	}
	return "", false
}

// tagName returns the tag name b as a string, without allocating for the
// common tags.
func tagName(b []byte) string {
	switch string(b) {
	case "a":
		return "a"
	case "p":
		return "p"
	case "br":
		return "br"
	case "hr":
		return "hr"
	case "li":
		return "li"
	case "ul":
		return "ul"
	case "ol":
		return "ol"
	case "div":
		return "div"
	case "td":
		return "td"
	case "th":
		return "th"
	case "tr":
		return "tr"
	case "table":
		return "table"
	case "pre":
		return "pre"
	case "img":
		return "img"
	case "body":
		return "body"
	case "span":
		return "span"
	case "b":
		return "b"
	case "i":
		return "i"
	case "u":
		return "u"
	case "strong":
		return "strong"
	case "em":
		return "em"
	case "font":
		return "font"
	case "h1":
		return "h1"
	case "h2":
		return "h2"
	case "h3":
		return "h3"
	case "h4":
		return "h4"
	case "h5":
		return "h5"
	case "h6":
		return "h6"
	case "head":
		return "head"
	case "title":
		return "title"
	case "script":
		return "script"
	case "style":
		return "style"
	case "noscript":
		return "noscript"
	case "template":
		return "template"
	case "svg":
		return "svg"
	case "object":
		return "object"
	case "blockquote":
		return "blockquote"
	case "address":
		return "address"
	case "figure":
		return "figure"
	case "section":
		return "section"
	case "article":
		return "article"
	case "header":
		return "header"
	case "footer":
		return "footer"
	case "nav":
		return "nav"
	case "main":
		return "main"
	case "dl":
		return "dl"
	case "dt":
		return "dt"
	case "dd":
		return "dd"
	case "center":
		return "center"
	case "caption":
		return "caption"
	case "tbody":
		return "tbody"
	case "thead":
		return "thead"
	case "html":
		return "html"
	case "meta":
		return "meta"
	case "link":
		return "link"
	case "small":
		return "small"
	case "sup":
		return "sup"
	case "sub":
		return "sub"
	case "code":
		return "code"
	}
	return string(b)
}

// textWriter builds the text with whitespace collapsed: a separating space
// or line breaks are written only before the next word, so no line ends in
// a space and the text starts and ends with a word.
type textWriter struct {
	b     strings.Builder
	nl    int  // line breaks pending before the next word
	space bool // a space pending before the next word
}

func (w *textWriter) newline(n int) {
	if n > w.nl {
		w.nl = n
	}
	w.space = false
}

func (w *textWriter) flush() {
	if w.b.Len() == 0 {
		w.nl, w.space = 0, false
		return
	}
	if w.nl > 0 {
		for range w.nl {
			w.b.WriteByte('\n')
		}
	} else if w.space {
		w.b.WriteByte(' ')
	}
	w.nl, w.space = 0, false
}

// text writes s with its whitespace collapsed.
func (w *textWriter) text(s string) {
	words := strings.Fields(s)
	if len(words) == 0 {
		if s != "" && w.nl == 0 {
			w.space = true
		}
		return
	}
	if isSpace(s[0]) || strings.HasPrefix(s, "\u00a0") {
		if w.nl == 0 {
			w.space = true
		}
	}
	for i, word := range words {
		if i > 0 {
			w.space = true
		}
		w.flush()
		w.b.WriteString(word)
	}
	last := s[len(s)-1]
	w.space = isSpace(last) || strings.HasSuffix(s, "\u00a0")
}

// raw writes s as is (preformatted text, bullets).
func (w *textWriter) raw(s string) {
	if s == "" {
		return
	}
	w.flush()
	w.b.WriteString(s)
}

// linkTarget appends " (href)" after the text written since l opened.
func (w *textWriter) linkTarget(l link) {
	href := l.href
	if href == "" || strings.HasPrefix(href, "#") || strings.HasPrefix(strings.ToLower(href), "javascript:") {
		return
	}
	text := ""
	if l.start <= w.b.Len() {
		text = strings.TrimSpace(w.b.String()[l.start:])
	}
	shown := strings.TrimPrefix(strings.TrimPrefix(href, "mailto:"), "tel:")
	switch text {
	case "":
		w.raw(shown)
		return
	case href, shown, strings.TrimSuffix(href, "/"):
		return
	}
	space := w.space
	w.space = true
	w.flush()
	w.b.WriteString("(" + href + ")")
	w.space = space
}

// String returns the text with blank-line runs squeezed and the ends
// trimmed.
func (w *textWriter) String() string {
	s := w.b.String()
	if !strings.Contains(s, "\n\n\n") && !strings.Contains(s, " \n") && !strings.Contains(s, "\t\n") {
		return strings.TrimSpace(s)
	}
	lines := strings.Split(s, "\n")
	out := make([]string, 0, len(lines))
	blank := 0
	for _, l := range lines {
		l = strings.TrimRight(l, " \t")
		if l == "" {
			blank++
			if blank > 1 {
				continue
			}
		} else {
			blank = 0
		}
		out = append(out, l)
	}
	return strings.TrimSpace(strings.Join(out, "\n"))
}

func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'
}
