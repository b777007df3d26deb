package envelope

import (
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// encodeExtra renders headers as "key:value" lines, the form FuzzFromBinary
// reads its free-form headers in. Keys are sorted so seeds are stable.
func encodeExtra(h map[string]string) string {
	keys := make([]string, 0, len(h))
	for k := range h {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		b.WriteString(k)
		b.WriteByte(':')
		b.WriteString(h[k])
		b.WriteByte('\n')
	}
	return b.String()
}

// fuzzHeader builds the header map for one fuzz input. The required
// attributes get their own arguments so the fuzzer reaches valid envelopes
// quickly; extra holds any other headers, one "key:value" a line (later lines
// win; keys may differ only in case from the fixed ones).
func fuzzHeader(specversion, id, source, typ, tm, version, kind, extra string) map[string]string {
	h := map[string]string{
		HeaderSpecVersion: specversion,
		HeaderID:          id,
		HeaderSource:      source,
		HeaderType:        typ,
		HeaderTime:        tm,
		HeaderVersion:     version,
		HeaderKind:        kind,
	}
	for line := range strings.SplitSeq(extra, "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		h[k] = v
	}
	return h
}

// addFuzzSeed adds a header map (as ToBinary or a broken producer would emit
// it) to the seed corpus of FuzzFromBinary.
func addFuzzSeed(f *testing.F, h map[string]string, body []byte) {
	h = cloneHeader(h)
	fixed := []string{HeaderSpecVersion, HeaderID, HeaderSource, HeaderType, HeaderTime, HeaderVersion, HeaderKind}
	args := make([]any, 0, 9)
	for _, k := range fixed {
		args = append(args, h[k])
		delete(h, k)
	}
	args = append(args, encodeExtra(h), body)
	f.Add(args...)
}

// referenceFromBinary is FromBinary as it was before its one-pass rewrite:
// an attribute at a time, each looked up with lookupHeader. FuzzFromBinary
// checks that FromBinary agrees with it on every input.
func referenceFromBinary(header map[string]string, body []byte) (*Envelope, error) {
	vals := make(map[string]string, len(attributeHeaders))
	for _, k := range attributeHeaders {
		v, err := lookupHeader(header, k)
		if err != nil {
			return nil, err
		}
		if len(v) > maxEncodedValue {
			return nil, fmt.Errorf("%w: header %s longer than %d bytes", ErrInvalid, k, maxHeaderValue)
		}
		v = referenceDecodeHeaderValue(v)
		if len(v) > maxHeaderValue {
			return nil, fmt.Errorf("%w: header %s longer than %d bytes", ErrInvalid, k, maxHeaderValue)
		}
		if !utf8.ValidString(v) {
			return nil, fmt.Errorf("%w: header %s is not valid UTF-8", ErrInvalid, k)
		}
		vals[k] = v
	}
	get := func(k string) string { return vals[k] }
	if sv := get(HeaderSpecVersion); sv != SpecVersion {
		return nil, fmt.Errorf("%w: header %s is %q, want %q", ErrInvalid, HeaderSpecVersion, sv, SpecVersion)
	}
	e := &Envelope{
		ID:              get(HeaderID),
		Source:          get(HeaderSource),
		Type:            get(HeaderType),
		Kind:            Kind(get(HeaderKind)),
		DataContentType: get(HeaderContentType),
		Key:             get(HeaderPartitionKey),
		CorrelationID:   get(HeaderCorrelationID),
		CausationID:     get(HeaderCausationID),
		TraceParent:     get(HeaderTraceParent),
		TraceState:      get(HeaderTraceState),
		Data:            body,
	}
	for k := range header {
		if asciiEqualFold(k, HeaderDataContentType) {
			e.DataContentType = get(HeaderDataContentType)
		}
	}
	v := get(HeaderVersion)
	n, err := strconv.Atoi(v)
	if err != nil {
		return nil, fmt.Errorf("%w: header %s is %q, not a number", ErrInvalid, HeaderVersion, v)
	}
	e.Version = n
	ts := get(HeaderTime)
	t, err := time.Parse(time.RFC3339Nano, ts)
	if err != nil {
		return nil, fmt.Errorf("%w: header %s is %q: %v", ErrInvalid, HeaderTime, ts, err)
	}
	e.Time = t.UTC()
	if err := e.Validate(); err != nil {
		return nil, err
	}
	return e, nil
}

// referenceDecodeHeaderValue is decodeHeaderValue written another way:
// quoted strings undone, then the value split at every '%', each piece
// after one starting with an escape if it has two hex digits.
func referenceDecodeHeaderValue(v string) string {
	v = unquoteHeaderValue(v)
	parts := strings.Split(v, "%")
	var b strings.Builder
	b.WriteString(parts[0])
	for _, p := range parts[1:] {
		if len(p) >= 2 {
			if n, err := strconv.ParseUint(p[:2], 16, 8); err == nil {
				b.WriteByte(byte(n))
				b.WriteString(p[2:])
				continue
			}
		}
		b.WriteByte('%')
		b.WriteString(p)
	}
	return b.String()
}

// lookupHeader returns the value of header k (lower case): the exact key if
// present, else the keys equal to k under ASCII case folding, which must all
// carry the same value. A missing header reads as "".
func lookupHeader(header map[string]string, k string) (string, error) {
	if v, ok := header[k]; ok {
		return v, nil
	}
	var val string
	found := false
	for hk, v := range header {
		if !asciiEqualFold(hk, k) {
			continue
		}
		if found && v != val {
			return "", fmt.Errorf("%w: header %s given more than once, in different cases, with different values", ErrInvalid, k)
		}
		val, found = v, true
	}
	return val, nil
}

func FuzzFromBinary(f *testing.F) {
	for _, e := range roundTripCases() {
		h, body := ToBinary(e.env)
		addFuzzSeed(f, h, body)
	}
	for _, tc := range fromBinaryErrorCases() {
		addFuzzSeed(f, tc.header, []byte("{}"))
	}
	// Header names in other cases, and a key given twice in different cases.
	h, body := ToBinary(validEnvelope())
	mixed := map[string]string{}
	for k, v := range h {
		mixed[strings.ToUpper(k[:1])+k[1:]] = v
	}
	mixed["CE-ID"] = "01HXZ0000000000000000000ZZ"
	addFuzzSeed(f, mixed, body)
	// Times with offsets near the ends of the RFC 3339 range.
	for _, tm := range []string{
		"9999-12-31T23:59:59.999999999-23:59",
		"0000-01-01T00:00:00+23:59",
		"2024-05-17T09:30:15,5Z",
		"2024-05-17T09:30:15.000000000+00:00",
	} {
		h := validHeader()
		h[HeaderTime] = tm
		addFuzzSeed(f, h, nil)
	}

	f.Fuzz(func(t *testing.T, specversion, id, source, typ, tm, version, kind, extra string, body []byte) {
		h := fuzzHeader(specversion, id, source, typ, tm, version, kind, extra)
		e, err := FromBinary(h, body)
		re, rerr := referenceFromBinary(h, body)
		switch {
		case (err == nil) != (rerr == nil):
			t.Fatalf("FromBinary: %v, the reference: %v", err, rerr)
		case err != nil && err.Error() != rerr.Error():
			t.Fatalf("FromBinary: %v, the reference: %v", err, rerr)
		case err == nil:
			if diff := envelopeDiff(e, re); diff != "" {
				t.Fatalf("FromBinary and the reference differ:\n%s", diff)
			}
		}
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("FromBinary error does not wrap ErrInvalid: %v", err)
			}
			if e != nil {
				t.Fatalf("FromBinary returned both an envelope and an error: %v", err)
			}
			return
		}
		// Decoding must not depend on map iteration order.
		for range 3 {
			again, err := FromBinary(h, body)
			if err != nil {
				t.Fatalf("second FromBinary of the same input failed: %v", err)
			}
			if diff := envelopeDiff(e, again); diff != "" {
				t.Fatalf("FromBinary of the same input differs:\n%s", diff)
			}
		}
		if err := e.Validate(); err != nil {
			t.Fatalf("FromBinary accepted an envelope that does not validate: %v", err)
		}
		h2, body2 := ToBinary(e)
		e2, err := FromBinary(h2, body2)
		if err != nil {
			t.Fatalf("FromBinary(ToBinary(e)) failed: %v\nheader: %q", err, h2)
		}
		if diff := envelopeDiff(e, e2); diff != "" {
			t.Fatalf("round trip not stable:\n%s", diff)
		}
	})
}
