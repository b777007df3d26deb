// Package template renders herald notifications. It is herald's template
// system: a *Set is a notify.Renderer as it is (notify.Rendered is this
// package's Rendered), so the notifier takes it directly:
//
//	set, err := template.NewSet()
//	err = set.Add(template.Spec{Name: "welcome", Channel: notify.Email,
//		Subject: `Welcome, {{.Recipient.Name}}`, Text: `Hello {{.Recipient.Name}}!`})
//	n, err := notify.NewNotifier(svc, dir, notify.WithRenderer(set))
//
// Templates get a notify.TemplateData: .Data is the event's payload, .Items
// a digest's items, .Recipient the recipient's profile. (notify.NewTemplates,
// an older map of templates without locales, is deprecated in its favour.)
//
// A Set holds templates keyed by (template name, channel, locale). Each
// entry has a subject and a plain-text body, both executed with
// text/template, and, for e-mail, an HTML body executed with html/template
// (contextual auto-escaping on). When an entry has HTML but no text, the
// plain-text part is derived from the rendered HTML with PlainText.
//
// Render picks the entry by locale fallback: the exact locale ("de-CH"),
// then its shorter prefixes ("de"), then the set's default locale and its
// prefixes. Templates are parsed once, at Add; Render is safe for
// concurrent use and does not lock on the hot path.
//
// Templates execute with missingkey=error: a missing map key is an error
// (wrapping ErrRender), not "<no value>". Besides text/template's builtins
// they may call upper, lower, trim, money and date (see Funcs for adding
// more).
package template

import (
	"bytes"
	"errors"
	"fmt"
	htmltemplate "html/template"
	"io"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	texttemplate "text/template"
)

// Sentinel errors of the package.
var (
	// ErrInvalidOption marks an invalid option passed to NewSet.
	ErrInvalidOption = errors.New("herald/notify/template: invalid option")
	// ErrInvalidSpec marks a Spec that Add refused: a missing name or
	// channel, no body, a duplicate, or a template that does not parse.
	ErrInvalidSpec = errors.New("herald/notify/template: invalid template")
	// ErrNoTemplate marks a lookup that found no template for the name and
	// channel in any locale of the fallback chain.
	ErrNoTemplate = errors.New("herald/notify/template: no template")
	// ErrRender marks a template whose execution failed (a missing key, a
	// function that returned an error, a bad argument).
	ErrRender = errors.New("herald/notify/template: render failed")
)

// Spec is the source of one template: what Add parses.
type Spec struct {
	// Name identifies the notification, e.g. "order.confirmed".
	Name string
	// Channel is the channel the template renders for ("email", "sms",
	// "push", …).
	Channel string
	// Locale is a BCP 47-like tag such as "en", "de" or "de-CH"; matching
	// is case-insensitive and "_" is read as "-". Empty means the set's
	// default locale.
	Locale string
	// Subject is a text/template for the subject (e-mail) or title (push).
	// Optional.
	Subject string
	// Text is a text/template for the plain-text body. It may be empty
	// only when HTML is set; the text is then derived from the HTML.
	Text string
	// HTML is an html/template for the e-mail HTML body. Optional.
	HTML string
}

// Rendered is the output of one render. notify.Rendered is an alias of
// it, which makes a *Set a notify.Renderer without this package importing
// notify.
type Rendered struct {
	// Subject is the rendered subject on one line ("" without one).
	Subject string
	// Text is the plain-text body, rendered or derived from HTML.
	Text string
	// HTML is the rendered HTML body, "" when the template has none.
	HTML string
	// Locale is the locale of the template that matched, which differs
	// from the requested one after a fallback.
	Locale string
}

// Key identifies one template of a Set.
type Key struct {
	Name    string // the template name, e.g. "order.confirmed"
	Channel string // the channel, e.g. "email"
	Locale  string // the canonical locale, e.g. "de-CH"
}

// Option configures a Set.
type Option func(*config) error

type config struct {
	defaultLocale string
	funcs         map[string]any
}

// DefaultLocale sets the locale that ends every fallback chain (default
// "en").
func DefaultLocale(locale string) Option {
	return func(c *config) error {
		l, err := canonicalLocale(locale)
		if err != nil {
			return fmt.Errorf("%w: default locale: %w", ErrInvalidOption, err)
		}
		c.defaultLocale = l
		return nil
	}
}

// Funcs adds functions that templates may call, in the style of
// text/template's FuncMap; a name given here overrides a built-in one. Each
// value must be a function returning one value, or a value and an error.
// Functions must be safe for concurrent use and free of side effects (Add
// executes an HTML template once with nil data to check its escaping).
func Funcs(fm map[string]any) Option {
	return func(c *config) error {
		for name, fn := range fm {
			if err := checkFunc(name, fn); err != nil {
				return fmt.Errorf("%w: func %q: %w", ErrInvalidOption, name, err)
			}
		}
		for name, fn := range fm {
			c.funcs[name] = fn
		}
		return nil
	}
}

// entry is one parsed template. Its fields are read-only after Add.
type entry struct {
	key     Key
	subject *texttemplate.Template // nil when the spec has no subject
	text    *texttemplate.Template // nil when derived from html
	html    *htmltemplate.Template // nil when the spec has no HTML
}

type mapKey struct{ name, channel, locale string }

// Set is a collection of templates. The zero value is not usable; create
// one with NewSet. A Set is safe for concurrent use.
type Set struct {
	defaultLocale string
	textFuncs     texttemplate.FuncMap
	htmlFuncs     htmltemplate.FuncMap

	mu      sync.Mutex                        // serializes writers
	entries atomic.Pointer[map[mapKey]*entry] // copy on write
	bufs    sync.Pool                         // *bytes.Buffer
}

// NewSet returns an empty Set.
func NewSet(opts ...Option) (*Set, error) {
	c := config{defaultLocale: "en", funcs: builtinFuncs()}
	for _, o := range opts {
		if o == nil {
			return nil, fmt.Errorf("%w: nil option", ErrInvalidOption)
		}
		if err := o(&c); err != nil {
			return nil, err
		}
	}
	s := &Set{
		defaultLocale: c.defaultLocale,
		textFuncs:     texttemplate.FuncMap(c.funcs),
		htmlFuncs:     htmltemplate.FuncMap(c.funcs),
	}
	s.bufs.New = func() any { return new(bytes.Buffer) }
	empty := map[mapKey]*entry{}
	s.entries.Store(&empty)
	return s, nil
}

// DefaultLocale returns the locale that ends every fallback chain.
func (s *Set) DefaultLocale() string { return s.defaultLocale }

// Add parses spec and adds it to the set. Parse errors, and HTML that
// html/template cannot escape safely, are reported here, wrapping
// ErrInvalidSpec and naming the template. Adding a (name, channel, locale)
// that is already present is an error.
func (s *Set) Add(spec Spec) error {
	e, err := s.parse(spec)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	old := *s.entries.Load()
	k := mapKey{e.key.Name, e.key.Channel, strings.ToLower(e.key.Locale)}
	if _, dup := old[k]; dup {
		return fmt.Errorf("%w: %s: already added", ErrInvalidSpec, describe(e.key))
	}
	next := make(map[mapKey]*entry, len(old)+1)
	for k, v := range old {
		next[k] = v
	}
	next[k] = e
	s.entries.Store(&next)
	return nil
}

func (s *Set) parse(spec Spec) (*entry, error) {
	if spec.Name == "" || spec.Channel == "" {
		return nil, fmt.Errorf("%w: name %q, channel %q: both are required", ErrInvalidSpec, spec.Name, spec.Channel)
	}
	locale := s.defaultLocale
	if spec.Locale != "" {
		l, err := canonicalLocale(spec.Locale)
		if err != nil {
			return nil, fmt.Errorf("%w: %s/%s: %w", ErrInvalidSpec, spec.Name, spec.Channel, err)
		}
		locale = l
	}
	e := &entry{key: Key{Name: spec.Name, Channel: spec.Channel, Locale: locale}}
	what := describe(e.key)
	if strings.TrimSpace(spec.Text) == "" && strings.TrimSpace(spec.HTML) == "" {
		return nil, fmt.Errorf("%w: %s: needs Text or HTML", ErrInvalidSpec, what)
	}
	var err error
	if spec.Subject != "" {
		if e.subject, err = s.parseText(what+" subject", spec.Subject); err != nil {
			return nil, err
		}
	}
	if strings.TrimSpace(spec.Text) != "" {
		if e.text, err = s.parseText(what+" text", spec.Text); err != nil {
			return nil, err
		}
	}
	if strings.TrimSpace(spec.HTML) != "" {
		t, err := htmltemplate.New(what + " html").Option("missingkey=error").Funcs(s.htmlFuncs).Parse(spec.HTML)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrInvalidSpec, what, err)
		}
		// html/template escapes a template on its first execution and
		// reports contexts it cannot escape (an unclosed attribute, say)
		// only then. Run it once now, so such errors surface at Add and
		// the escaping work is not done under a concurrent first Render.
		// Output goes nowhere; execution errors with nil data are expected
		// and ignored.
		var escErr *htmltemplate.Error
		if err := t.Execute(io.Discard, nil); errors.As(err, &escErr) {
			return nil, fmt.Errorf("%w: %s: %w", ErrInvalidSpec, what, err)
		}
		e.html = t
	}
	return e, nil
}

func (s *Set) parseText(name, src string) (*texttemplate.Template, error) {
	t, err := texttemplate.New(name).Option("missingkey=error").Funcs(s.textFuncs).Parse(src)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrInvalidSpec, name, err)
	}
	return t, nil
}

// Render renders the template name for channel in locale, or in the first
// locale of its fallback chain that has one, with data. It returns an error
// wrapping ErrNoTemplate when no locale matches and ErrRender when the
// template fails to execute.
func (s *Set) Render(name, channel, locale string, data any) (Rendered, error) {
	e, err := s.lookup(name, channel, locale)
	if err != nil {
		return Rendered{}, err
	}
	return s.execute(e, data)
}

// Preview renders like Render; it exists for tooling (a template editor, the
// console) that renders sample data, and may grow diagnostics later.
func (s *Set) Preview(name, channel, locale string, sample any) (Rendered, error) {
	return s.Render(name, channel, locale, sample)
}

// PreviewResult is one rendering of PreviewAll.
type PreviewResult struct {
	Key      Key
	Rendered Rendered
	Err      error // the render error of this template, if any
}

// PreviewAll renders every channel and locale of the template name with
// sample, in (channel, locale) order. A template that fails to render is
// reported in its PreviewResult.Err; PreviewAll itself fails, with
// ErrNoTemplate, only when the set has no template of that name.
func (s *Set) PreviewAll(name string, sample any) ([]PreviewResult, error) {
	var out []PreviewResult
	for _, e := range *s.entries.Load() {
		if e.key.Name != name {
			continue
		}
		r, err := s.execute(e, sample)
		out = append(out, PreviewResult{Key: e.key, Rendered: r, Err: err})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: %q in any channel or locale", ErrNoTemplate, name)
	}
	slices.SortFunc(out, func(a, b PreviewResult) int {
		if c := strings.Compare(a.Key.Channel, b.Key.Channel); c != 0 {
			return c
		}
		return strings.Compare(a.Key.Locale, b.Key.Locale)
	})
	return out, nil
}

// Keys lists the templates of the set, sorted by name, channel and locale.
func (s *Set) Keys() []Key {
	m := *s.entries.Load()
	out := make([]Key, 0, len(m))
	for _, e := range m {
		out = append(out, e.key)
	}
	slices.SortFunc(out, func(a, b Key) int {
		if c := strings.Compare(a.Name, b.Name); c != 0 {
			return c
		}
		if c := strings.Compare(a.Channel, b.Channel); c != 0 {
			return c
		}
		return strings.Compare(a.Locale, b.Locale)
	})
	return out
}

// lookup walks the fallback chain of locale.
func (s *Set) lookup(name, channel, locale string) (*entry, error) {
	m := *s.entries.Load()
	// Fast path: the exact locale as given, already canonical.
	if e, ok := m[mapKey{name, channel, strings.ToLower(locale)}]; ok {
		return e, nil
	}
	var tried []string
	for _, l := range []string{strings.ToLower(strings.ReplaceAll(locale, "_", "-")), strings.ToLower(s.defaultLocale)} {
		for l != "" {
			if !slices.Contains(tried, l) {
				if e, ok := m[mapKey{name, channel, l}]; ok {
					return e, nil
				}
				tried = append(tried, l)
			}
			i := strings.LastIndexByte(l, '-')
			if i < 0 {
				break
			}
			l = l[:i]
		}
	}
	return nil, fmt.Errorf("%w: %q for channel %q in locale %q (tried %s)", ErrNoTemplate, name, channel, locale, strings.Join(tried, ", "))
}

func (s *Set) execute(e *entry, data any) (Rendered, error) {
	r := Rendered{Locale: e.key.Locale}
	buf := s.bufs.Get().(*bytes.Buffer)
	defer func() {
		if buf.Cap() <= 64<<10 {
			buf.Reset()
			s.bufs.Put(buf)
		}
	}()
	run := func(part string, exec func(io.Writer) error) (string, error) {
		buf.Reset()
		if err := exec(buf); err != nil {
			return "", fmt.Errorf("%w: %s %s: %w", ErrRender, describe(e.key), part, err)
		}
		return buf.String(), nil
	}
	var err error
	if e.subject != nil {
		if r.Subject, err = run("subject", func(w io.Writer) error { return e.subject.Execute(w, data) }); err != nil {
			return Rendered{}, err
		}
		// A subject is one line: newlines would break mail headers and
		// push titles.
		r.Subject = strings.Join(strings.Fields(r.Subject), " ")
	}
	if e.html != nil {
		if r.HTML, err = run("html", func(w io.Writer) error { return e.html.Execute(w, data) }); err != nil {
			return Rendered{}, err
		}
	}
	if e.text != nil {
		if r.Text, err = run("text", func(w io.Writer) error { return e.text.Execute(w, data) }); err != nil {
			return Rendered{}, err
		}
	} else {
		r.Text = PlainText(r.HTML)
	}
	return r, nil
}

func describe(k Key) string {
	return fmt.Sprintf("template %q channel %q locale %q", k.Name, k.Channel, k.Locale)
}

// canonicalLocale normalizes a locale tag: "de_ch" → "de-CH", "EN" → "en",
// "zh-hant-tw" → "zh-Hant-TW". It accepts subtags of 1–8 ASCII letters or
// digits.
func canonicalLocale(tag string) (string, error) {
	if tag == "" {
		return "", errors.New("empty locale")
	}
	parts := strings.Split(strings.ReplaceAll(tag, "_", "-"), "-")
	for i, p := range parts {
		if len(p) == 0 || len(p) > 8 {
			return "", fmt.Errorf("locale %q: bad subtag %q", tag, p)
		}
		for _, r := range p {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
				return "", fmt.Errorf("locale %q: bad subtag %q", tag, p)
			}
		}
		p = strings.ToLower(p)
		switch {
		case i == 0:
		case len(p) == 2:
			p = strings.ToUpper(p) // region
		case len(p) == 4 && p[0] >= 'a' && p[0] <= 'z':
			p = strings.ToUpper(p[:1]) + p[1:] // script
		}
		parts[i] = p
	}
	return strings.Join(parts, "-"), nil
}
