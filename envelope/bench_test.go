package envelope

import (
	"maps"
	"testing"
)

// The benchmarks below measure herald's own path: the headers a producer
// writes and a consumer reads for every event.
//
//	go test -run='^$' -bench=. ./envelope

func BenchmarkBinaryHeaders(b *testing.B) {
	e := validEnvelope()
	b.ReportAllocs()
	for b.Loop() {
		for k, v := range BinaryHeaders(e) {
			_, _ = k, v
		}
	}
}

func BenchmarkFromBinaryHeaders(b *testing.B) {
	h, body := ToBinary(validEnvelope())
	b.ReportAllocs()
	for b.Loop() {
		if _, err := FromBinaryHeaders(maps.All(h), body); err != nil {
			b.Fatal(err)
		}
	}
}
