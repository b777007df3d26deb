package benchrun

import "testing"

func TestNiceCeil(t *testing.T) {
	for _, c := range []struct{ in, want float64 }{
		{0, 10}, {7, 10}, {10, 10}, {11, 15}, {20506, 25000}, {29413, 30000}, {30001, 40000}, {81000, 100000}, {300, 300}, {301, 400},
	} {
		if got := niceCeil(c.in); got != c.want {
			t.Errorf("niceCeil(%v) = %v, want %v", c.in, got, c.want)
		}
	}
}
