package notify

import (
	"errors"
	"fmt"
	htmltemplate "html/template"
	"strings"
	texttemplate "text/template"

	"github.com/heraldhq/herald/notify/template"
)

// ErrTemplateNotFound is what a Renderer returns (wrapped or not) when it
// has no template for a name and channel; notify/template's ErrNoTemplate
// counts as it. The delivery is recorded as failed with reason "template"
// (except on Webhook, which then posts a default payload); so is any other
// rendering error, since rendering again would fail again.
var ErrTemplateNotFound = errors.New("notify: template not found")

// templateNotFound reports whether err says the renderer has no template.
func templateNotFound(err error) bool {
	return errors.Is(err, ErrTemplateNotFound) || errors.Is(err, template.ErrNoTemplate)
}

// Renderer renders a named template for a channel and locale. data is a
// TemplateData.
//
// Templates are notify/template's: a *template.Set is a Renderer as it is
// (template.NewSet, Set.Add one template.Spec per name, channel and locale,
// then WithRenderer(set)), with locale fallback, template functions and a
// plain-text part derived from the HTML. RendererFunc adapts anything else.
// NewTemplates, an older map of templates without locales, is deprecated.
type Renderer interface {
	Render(name, channel, locale string, data any) (Rendered, error)
}

// A *template.Set is a Renderer.
var _ Renderer = (*template.Set)(nil)

// RendererFunc adapts a function to Renderer.
type RendererFunc func(name, channel, locale string, data any) (Rendered, error)

// Render calls f.
func (f RendererFunc) Render(name, channel, locale string, data any) (Rendered, error) {
	return f(name, channel, locale, data)
}

// Rendered is a rendered message: Subject, Text (required; a webhook
// without a template gets a default), HTML (e-mail only, optional) and the
// Locale actually used. It is notify/template's Rendered, which is what
// makes a *template.Set a Renderer.
type Rendered = template.Rendered

// Template is the source of one template of NewTemplates: Go text/template
// for Subject and Text, html/template for HTML.
//
// Deprecated: use notify/template's Spec (see NewTemplates).
type Template struct {
	Subject, Text, HTML string
}

// TemplateSet is the Renderer of NewTemplates: templates looked up by
// "name/channel", then "name", parsed once, executed with
// missingkey=error. It ignores locales.
//
// Deprecated: use notify/template's Set (see NewTemplates).
type TemplateSet struct {
	m map[string]parsed
}

type parsed struct {
	subject, text *texttemplate.Template
	html          *htmltemplate.Template
}

// NewTemplates parses ts, keyed "name" or "name/channel".
//
// Deprecated: use notify/template, herald's one template system, whose
// *Set is a Renderer:
//
//	set, err := template.NewSet()
//	err = set.Add(template.Spec{Name: "welcome", Channel: notify.Email,
//		Subject: `Welcome, {{.Recipient.Name}}`, Text: `…`, HTML: `…`})
//	n, err := notify.NewNotifier(svc, dir, notify.WithRenderer(set))
//
// A Spec names its channel: a key "name" here, which served every channel,
// becomes one Spec per channel the route sends on.
func NewTemplates(ts map[string]Template) (*TemplateSet, error) {
	s := &TemplateSet{m: map[string]parsed{}}
	for key, t := range ts {
		var p parsed
		var err error
		if p.subject, err = texttemplate.New(key).Option("missingkey=error").Parse(t.Subject); err != nil {
			return nil, fmt.Errorf("%w: template %s subject: %v", ErrInvalidOption, key, err)
		}
		if p.text, err = texttemplate.New(key).Option("missingkey=error").Parse(t.Text); err != nil {
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
