package heraldtest

import (
	"fmt"
	"slices"
	"testing"
)

func TestOrdersKeepEachKeysOrder(t *testing.T) {
	cases := []struct {
		keys  []string
		limit int
		want  [][]int
	}{
		{keys: []string{"a", "a", "a"}, limit: 10, want: nil},
		{keys: []string{"a", "b", "a"}, limit: 10, want: [][]int{{0, 2, 1}, {1, 0, 2}}},
		{keys: []string{"a", "b"}, limit: 10, want: [][]int{{1, 0}}},
		{keys: []string{"", ""}, limit: 10, want: nil}, // notifications: no keys, one queue
	}
	for _, c := range cases {
		t.Run(fmt.Sprint(c.keys), func(t *testing.T) {
			got := orders(c.keys, c.limit)
			slices.SortFunc(got, slices.Compare)
			if fmt.Sprint(got) != fmt.Sprint(c.want) {
				t.Fatalf("orders(%q) = %v, want %v", c.keys, got, c.want)
			}
		})
	}
	// a, b, c, a: 4!/2! = 12 orders keep a's two in order, 11 besides the
	// given one; a limit of 3 picks 3 of them.
	all := orders([]string{"a", "b", "c", "a"}, 1000)
	if len(all) != 11 {
		t.Fatalf("%d orders of a,b,c,a, want 11", len(all))
	}
	for _, o := range append(all, orders([]string{"a", "b", "c", "a"}, 3)...) {
		if slices.Index(o, 0) > slices.Index(o, 3) {
			t.Fatalf("order %v puts the second a before the first", o)
		}
	}
	if got := orders([]string{"a", "b", "c", "a"}, 3); len(got) != 3 {
		t.Fatalf("limit 3: %d orders", len(got))
	}
}
