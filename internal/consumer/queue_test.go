package consumer

import (
	"slices"
	"testing"
	"time"
)

func TestQueue(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	type push struct {
		seq  uint64
		key  string
		held bool
		due  time.Duration // after t0
	}
	for _, tc := range []struct {
		name   string
		pushes []push
		remove []uint64
		unhold bool
		at     time.Duration
		limit  int
		want   []uint64      // ready, in stream order
		next   time.Duration // -1: none
		count  int
	}{
		{
			name:   "every key's head in stream order",
			pushes: []push{{seq: 3, key: "b"}, {seq: 1, key: "a"}, {seq: 2, key: "a"}, {seq: 4, key: "c"}},
			limit:  10, want: []uint64{1, 2, 3, 4}, next: -1, count: 4,
		},
		{
			name:   "a retrying event holds back only its key",
			pushes: []push{{seq: 1, key: "a", due: time.Second}, {seq: 2, key: "a"}, {seq: 3, key: "b"}},
			limit:  10, want: []uint64{3}, next: time.Second, count: 3,
		},
		{
			name:   "due at now runs",
			pushes: []push{{seq: 1, key: "a", due: time.Second}, {seq: 2, key: "a"}},
			at:     time.Second, limit: 10, want: []uint64{1, 2}, next: -1, count: 2,
		},
		{
			name:   "the earliest due time is next",
			pushes: []push{{seq: 1, key: "a", due: 3 * time.Second}, {seq: 2, key: "b", due: 2 * time.Second}},
			limit:  10, want: nil, next: 2 * time.Second, count: 2,
		},
		{
			name:   "a redelivery goes back before newer events of its key",
			pushes: []push{{seq: 5, key: "a"}, {seq: 7, key: "a", due: time.Second}, {seq: 3, key: "a"}},
			limit:  10, want: []uint64{3, 5}, next: time.Second, count: 3,
		},
		{
			name:   "held items wait, with what follows them in their key",
			pushes: []push{{seq: 1, key: "a"}, {seq: 2, key: "a", held: true}, {seq: 3, key: "a"}, {seq: 4, key: "b", held: true}, {seq: 5, key: "c"}},
			limit:  10, want: []uint64{1, 5}, next: -1, count: 5,
		},
		{
			name:   "unhold lets them go",
			pushes: []push{{seq: 1, key: "a", held: true}, {seq: 2, key: "b", held: true}},
			unhold: true, limit: 10, want: []uint64{1, 2}, next: -1, count: 2,
		},
		{
			name:   "over the limit: the first in stream order, next is now",
			pushes: []push{{seq: 4, key: "b"}, {seq: 1, key: "a"}, {seq: 2, key: "c"}, {seq: 3, key: "a"}},
			limit:  2, want: []uint64{1, 2}, next: 0, count: 4,
		},
		{
			name:   "removed items leave their key",
			pushes: []push{{seq: 1, key: "a"}, {seq: 2, key: "a"}, {seq: 3, key: "b"}},
			remove: []uint64{1, 3}, limit: 10, want: []uint64{2}, next: -1, count: 1,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q := newQueue()
			for _, p := range tc.pushes {
				it := &item{seq: p.seq, key: p.key, held: p.held}
				if p.due != 0 {
					it.due = t0.Add(p.due)
				}
				q.push(it)
			}
			for _, s := range tc.remove {
				q.remove(q.bySeq[s])
			}
			if tc.unhold {
				if n := q.unhold(); n != len(tc.pushes) {
					t.Errorf("unhold = %d, want %d", n, len(tc.pushes))
				}
			}
			got, next := q.ready(t0.Add(tc.at), tc.limit)
			var seqs []uint64
			for _, it := range got {
				seqs = append(seqs, it.seq)
			}
			if !slices.Equal(seqs, tc.want) {
				t.Errorf("ready = %v, want %v", seqs, tc.want)
			}
			wantNext := time.Time{}
			if tc.next >= 0 {
				wantNext = t0.Add(tc.next)
				if tc.next == 0 {
					wantNext = t0.Add(tc.at)
				}
			}
			if !next.Equal(wantNext) {
				t.Errorf("next = %v, want %v", next, wantNext)
			}
			if q.len() != tc.count || len(slices.Collect(q.seqs())) != tc.count {
				t.Errorf("len = %d, seqs %v, want %d", q.len(), slices.Collect(q.seqs()), tc.count)
			}
		})
	}
}

func TestQueueRedeliver(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	q := newQueue()
	first := &fakeDelivery{seq: 7, num: 1}
	it := &item{seq: 7, key: "a", d: first, touched: t0}
	q.push(it)
	again := &fakeDelivery{seq: 7, num: 2}
	if !q.redeliver(again, t0.Add(time.Second)) {
		t.Fatal("a redelivery of a held item is not taken")
	}
	if it.d != again || !it.touched.Equal(t0.Add(time.Second)) || q.len() != 1 {
		t.Errorf("after redelivery: delivery %p (want %p), touched %v, len %d", it.d, again, it.touched, q.len())
	}
	if q.redeliver(&fakeDelivery{seq: 8}, t0) || q.redeliver(&fakeDelivery{seq: 0}, t0) {
		t.Error("a delivery of no held item (or without a sequence) is taken as a redelivery")
	}
	q.reset()
	if q.len() != 0 || len(slices.Collect(q.items())) != 0 {
		t.Error("reset leaves items")
	}
}
