package notify_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/internal/testdb"
	"github.com/heraldhq/herald/notify"
)

// TestDeprecatedNames keeps the old names building and meaning what the new
// ones mean: notify.New is NewNotifier, Permanent is PermanentFailure,
// WithRetry is WithSendRetry.
func TestDeprecatedNames(t *testing.T) {
	var (
		_ func(*herald.Service, notify.Directory, ...notify.Option) (*notify.Notifier, error) = notify.New
		_ func(error) error                                                                   = notify.Permanent
		_ func(notify.Retry) notify.Option                                                    = notify.WithRetry
	)
	if err := notify.Permanent(errors.New("550")); !errors.Is(err, notify.ErrPermanent) {
		t.Errorf("notify.Permanent(err) = %v, does not wrap ErrPermanent", err)
	}
	if notify.Permanent(nil) != nil {
		t.Error("notify.Permanent(nil) != nil")
	}
	svc, err := herald.New("deprecated", herald.WithStore(testdb.SQLite(t)))
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	// The old WithRetry validates like the new one.
	if _, err := notify.New(svc, notify.MapDirectory{}, notify.WithRetry(notify.Retry{BaseDelay: time.Second, MaxDelay: time.Millisecond})); !errors.Is(err, notify.ErrInvalidOption) {
		t.Errorf("WithRetry with MaxDelay < BaseDelay: %v, want ErrInvalidOption", err)
	}
	n, err := notify.New(svc, notify.MapDirectory{}, notify.WithRetry(notify.Retry{MaxAttempts: 2}))
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
}
