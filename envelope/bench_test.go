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

// BenchmarkDecode is what a consumer runs for each of herald's own events
// (FromBinaryHeaders before Decode existed).
func BenchmarkDecode(b *testing.B) {
	h, body := ToBinary(validEnvelope())
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := Decode(maps.All(h), body, KindIntegration); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeStructured is a foreign event in structured mode.
func BenchmarkDecodeStructured(b *testing.B) {
	h := map[string]string{HeaderContentType: MediaTypeStructured}
	body := []byte(structuredBody)
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := Decode(maps.All(h), body, KindIntegration); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkNeedsEncoding(b *testing.B) {
	e := validEnvelope()
	vals := []string{e.ID, e.Source, e.Type, e.Key, e.CorrelationID, e.CausationID, e.TraceParent, e.TraceState, e.DataContentType}
	b.ReportAllocs()
	for b.Loop() {
		for _, v := range vals {
			if needsEncoding(v) {
				b.Fatal(v)
			}
		}
	}
}
