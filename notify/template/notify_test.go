package template_test

import (
	"testing"

	"github.com/heraldhq/herald/notify"
	"github.com/heraldhq/herald/notify/template"
)

// TestConvertsToNotifyRendered guards that Rendered converts to notify.Rendered,
// which is how the notifier adapts a Set to its Renderer.
func TestConvertsToNotifyRendered(t *testing.T) {
	s := newSet(t)
	mustAdd(t, s, template.Spec{Name: "x", Channel: "sms", Text: "hi"})
	var r notify.Renderer = notify.RendererFunc(func(n, c, l string, d any) (notify.Rendered, error) {
		out, err := s.Render(n, c, l, d)
		return notify.Rendered(out), err
	})
	out, err := r.Render("x", "sms", "en", nil)
	if err != nil || out.Text != "hi" {
		t.Fatal(out, err)
	}
}
