package template_test

import (
	"errors"
	"testing"

	"github.com/heraldhq/herald/notify"
	"github.com/heraldhq/herald/notify/template"
)

// TestSetIsANotifyRenderer guards that a *Set is a notify.Renderer as it is
// (notify.Rendered is an alias of Rendered), which is how the notifier takes
// it: notify.WithRenderer(set).
func TestSetIsANotifyRenderer(t *testing.T) {
	s := newSet(t)
	mustAdd(t, s, template.Spec{Name: "x", Channel: "sms", Text: "hi {{.}}"})
	var r notify.Renderer = s
	out, err := r.Render("x", "sms", "en", "there")
	if err != nil || out.Text != "hi there" || out.Locale != "en" {
		t.Fatal(out, err)
	}
	// What the notifier recognizes as a missing template (see
	// notify.ErrTemplateNotFound).
	if _, err := r.Render("nope", "sms", "en", nil); !errors.Is(err, template.ErrNoTemplate) {
		t.Fatalf("missing template: %v", err)
	}
	// The conversion older adapters used still compiles.
	var conv notify.Rendered = notify.Rendered(template.Rendered{Text: "t"})
	if conv.Text != "t" {
		t.Fatal(conv)
	}
}
