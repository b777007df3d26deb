package herald

import (
	"errors"
	"reflect"
	"testing"
	"time"
)

// TestOptionsFitTheirCalls pins which calls each option fits: an option
// that fits a call implements that call's option interface, one that does
// not fit it does not (so passing it there does not compile).
func TestOptionsFitTheirCalls(t *testing.T) {
	t.Parallel()
	policy := RetryPolicy{MaxAttempts: 2, BaseDelay: time.Millisecond, MaxDelay: time.Second}
	kinds := []struct {
		name  string
		iface reflect.Type
	}{
		{"New", reflect.TypeFor[Option]()},
		{"contract", reflect.TypeFor[ContractOption]()},
		{"Subscribe", reflect.TypeFor[SubscribeOption]()},
		{"Handle", reflect.TypeFor[HandleOption]()},
	}
	tests := []struct {
		name string
		opt  any
		fits []string
	}{
		{"Retry", Retry(policy), []string{"New", "Subscribe"}},
		{"Emits", Emits(), []string{"Subscribe", "Handle"}},
		{"WithRetry (deprecated)", WithRetry(policy), []string{"New", "Subscribe"}},
		{"HandlerEmits (deprecated)", HandlerEmits(), []string{"Subscribe", "Handle"}},
		{"ServiceVersion", ServiceVersion("1"), []string{"New"}},
		{"WithVersion (deprecated)", WithVersion("1"), []string{"New"}},
		{"WithMaxDepth", WithMaxDepth(1), []string{"New"}},
		{"WithObserver", WithObserver(ObserverFunc(nil)), []string{"New"}},
		{"Version", Version(1), []string{"contract"}},
		{"KeyBy", KeyBy(func(string) string { return "" }), []string{"contract"}},
		{"BatchSize", BatchSize(1), []string{"Subscribe"}},
		{"AckWait", AckWait(time.Second), []string{"Subscribe"}},
		{"MaxInFlight", MaxInFlight(1), []string{"Subscribe"}},
		{"Delivers", Delivers("email"), []string{"Subscribe"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := reflect.TypeOf(tt.opt)
			for _, k := range kinds {
				want := false
				for _, f := range tt.fits {
					want = want || f == k.name
				}
				if ok := got.Implements(k.iface); ok != want {
					t.Errorf("%s (%v) fits %s: %v, want %v", tt.name, got, k.name, ok, want)
				}
			}
		})
	}
}

// TestOneOptionEachCall checks that an option shared by several calls
// validates and takes effect in each of them.
func TestOneOptionEachCall(t *testing.T) {
	t.Parallel()
	good := RetryPolicy{MaxAttempts: 7, BaseDelay: time.Millisecond, MaxDelay: time.Second}
	bad := RetryPolicy{MaxAttempts: 0, BaseDelay: time.Millisecond, MaxDelay: time.Second}
	domain := Domain[struct{}]("orders.placed")
	integration := Integration[struct{}]("shop.order.placed")

	var c config
	if err := Retry(good).applyService(&c); err != nil || c.retry != good {
		t.Errorf("Retry on New: %v, %+v; want the policy", err, c.retry)
	}
	var sc subConfig
	if err := Retry(good).applySubscribe(&sc); err != nil || sc.retry != good {
		t.Errorf("Retry on Subscribe: %v, %+v; want the policy", err, sc.retry)
	}
	if err := Retry(bad).applyService(&c); !errors.Is(err, ErrInvalidOption) {
		t.Errorf("bad Retry on New: %v, want ErrInvalidOption", err)
	}
	if err := Retry(bad).applySubscribe(&sc); !errors.Is(err, ErrInvalidOption) {
		t.Errorf("bad Retry on Subscribe: %v, want ErrInvalidOption", err)
	}

	if err := Emits(domain).applySubscribe(&sc); err != nil || len(sc.emits) != 1 {
		t.Errorf("Emits on Subscribe: %v, %v; want the contract", err, sc.emits)
	}
	var hc handleConfig
	if err := Emits(domain).applyHandle(&hc); err != nil || len(hc.emits) != 1 {
		t.Errorf("Emits on Handle: %v, %v; want the contract", err, hc.emits)
	}
	if err := Emits(integration).applySubscribe(&sc); !errors.Is(err, ErrInvalidOption) {
		t.Errorf("Emits of an integration event on Subscribe: %v, want ErrInvalidOption", err)
	}
	if err := Emits(integration).applyHandle(&hc); !errors.Is(err, ErrInvalidOption) {
		t.Errorf("Emits of an integration event on Handle: %v, want ErrInvalidOption", err)
	}
}

// TestNilOption: a nil option is refused with ErrInvalidOption (or
// ErrInvalidContract) instead of panicking.
func TestNilOption(t *testing.T) {
	t.Parallel()
	if _, err := New("orders", nil); !errors.Is(err, ErrInvalidOption) {
		t.Errorf("New with a nil option: %v, want ErrInvalidOption", err)
	}
	c := Domain[struct{}]("orders.placed", nil)
	if err := NewRegistry().Register(c); !errors.Is(err, ErrInvalidContract) {
		t.Errorf("contract with a nil option: %v, want ErrInvalidContract", err)
	}
}
