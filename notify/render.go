package notify

import (
	"errors"
	"fmt"
	htmltemplate "html/template"
	"strings"
	"text/template"
)

// ErrTemplateNotFound is what a Renderer returns (wrapped or not) when it
// has no template for a name and channel. The delivery is recorded as
// failed with reason "template"; so is any other rendering error, since
// rendering again would fail again.
var ErrTemplateNotFound = errors.New("notify: template not found")

// Renderer renders a named template for a channel and locale. data is a
// TemplateData. notify/template adapts to it; NewTemplates is a small
// built-in one.
type Renderer interface {
	Render(name, channel, locale string, data any) (Rendered, error)
}

// RendererFunc adapts a function to Renderer.
type RendererFunc func(name, channel, locale string, data any) (Rendered, error)

// Render calls f.
func (f RendererFunc) Render(name, channel, locale string, data any) (Rendered, error) {
	return f(name, channel, locale, data)
}

// Rendered is a rendered message.
type Rendered struct {
	Subject string
	Text    string // required (a webhook without a template gets a default)
	HTML    string // e-mail only, optional
	Locale  string // the locale actually used
}

// Template is the source of one built-in template: Go text/template for
// Subject and Text, html/template for HTML.
type Template struct {
	Subject, Text, HTML string
}

// TemplateSet is the built-in Renderer: templates looked up by
// "name/channel", then "name", parsed once, executed with
// missingkey=error. It ignores locales.
type TemplateSet struct {
	m map[string]parsed
}

type parsed struct {
	subject, text *template.Template
	html          *htmltemplate.Template
}

// NewTemplates parses ts, keyed "name" or "name/channel".
func NewTemplates(ts map[string]Template) (*TemplateSet, error) {
	s := &TemplateSet{m: map[string]parsed{}}
	for key, t := range ts {
		var p parsed
		var err error
		if p.subject, err = template.New(key).Option("missingkey=error").Parse(t.Subject); err != nil {
			return nil, fmt.Errorf("%w: template %s subject: %v", ErrInvalidOption, key, err)
		}
		if p.text, err = template.New(key).Option("missingkey=error").Parse(t.Text); err != nil {
			return nil, fmt.Errorf("%w: template %s text: %v", ErrInvalidOption, key, err)
		}
		if t.HTML != "" {
			if p.html, err = htmltemplate.New(key).Option("missingkey=error").Parse(t.HTML); err != nil {
				return nil, fmt.Errorf("%w: template %s html: %v", ErrInvalidOption, key, err)
			}
		}
		s.m[key] = p
	}
	return s, nil
}

// Render renders name for channel.
func (s *TemplateSet) Render(name, channel, locale string, data any) (Rendered, error) {
	p, ok := s.m[name+"/"+channel]
	if !ok {
		if p, ok = s.m[name]; !ok {
			return Rendered{}, fmt.Errorf("%w: %q for %s", ErrTemplateNotFound, name, channel)
		}
	}
	var out Rendered
	var b strings.Builder
	if err := p.subject.Execute(&b, data); err != nil {
		return out, err
	}
	out.Subject = b.String()
	b.Reset()
	if err := p.text.Execute(&b, data); err != nil {
		return out, err
	}
	out.Text = b.String()
	if p.html != nil {
		b.Reset()
		if err := p.html.Execute(&b, data); err != nil {
			return out, err
		}
		out.HTML = b.String()
	}
	out.Locale = locale
	return out, nil
}
