package envelope

import (
	"bytes"
	"errors"
	"fmt"
	"iter"
	"maps"
	"strings"
	"testing"
	"time"
)

// envelopeDiff describes how a and b differ ("" when equal). Times are
// compared as instants, Data as bytes (nil equals empty).
func envelopeDiff(a, b *Envelope) string {
	var d []string
	str := func(name, x, y string) {
		if x != y {
			d = append(d, fmt.Sprintf("%s: %q != %q", name, x, y))
		}
	}
	str("ID", a.ID, b.ID)
	str("Type", a.Type, b.Type)
	if a.Version != b.Version {
		d = append(d, fmt.Sprintf("Version: %d != %d", a.Version, b.Version))
	}
	str("Kind", string(a.Kind), string(b.Kind))
	str("Source", a.Source, b.Source)
	str("Key", a.Key, b.Key)
	if !a.Time.Equal(b.Time) {
		d = append(d, fmt.Sprintf("Time: %s != %s", a.Time.Format(time.RFC3339Nano), b.Time.Format(time.RFC3339Nano)))
	}
	str("CorrelationID", a.CorrelationID, b.CorrelationID)
	str("CausationID", a.CausationID, b.CausationID)
	str("TraceParent", a.TraceParent, b.TraceParent)
	str("TraceState", a.TraceState, b.TraceState)
	str("DataContentType", a.DataContentType, b.DataContentType)
	if !bytes.Equal(a.Data, b.Data) {
		d = append(d, fmt.Sprintf("Data: %q != %q", a.Data, b.Data))
	}
	return strings.Join(d, "\n")
}

func cloneHeader(h map[string]string) map[string]string { return maps.Clone(h) }

// validHeader is the binary-mode header of validEnvelope.
func validHeader() map[string]string {
	h, _ := ToBinary(validEnvelope())
	return h
}

type roundTripCase struct {
	name string
	env  *Envelope
}

func roundTripCases() []roundTripCase {
	full := validEnvelope()
	full.Time = time.Date(2024, 5, 17, 9, 30, 15, 123456789, time.UTC)

	minimal := &Envelope{
		ID:      "01HXZ3N0P0AAAAAAAAAAAAAAAA",
		Type:    "shop.order.placed",
		Version: 1,
		Kind:    KindDomain,
		Source:  "orders",
		Time:    time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC),
	}

	binary := validEnvelope()
	binary.DataContentType = "application/octet-stream"
	binary.Data = []byte{0x00, 0xff, 0xfe, '\n', '\r', 0x80, 0x01, 0x00}

	unicode := validEnvelope()
	unicode.Key = "客户-42/Ünïcödé ✓"
	unicode.Source = "svc/日本"
	unicode.Kind = KindNotification

	emptyData := validEnvelope()
	emptyData.Data = []byte{}

	offset := validEnvelope()
	offset.Time = time.Date(2024, 5, 17, 23, 59, 59, 999999999, time.FixedZone("", -7*3600))

	bigVersion := validEnvelope()
	bigVersion.Version = 1<<31 - 1

	oneNano := validEnvelope()
	oneNano.Time = time.Date(1999, 12, 31, 23, 59, 59, 1, time.UTC)

	maxLen := validEnvelope()
	maxLen.TraceState = strings.Repeat("a", maxHeaderValue)

	edges := validEnvelope()
	edges.Time = time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC)
	edges.Kind = KindIntegration

	return []roundTripCase{
		{"all fields", full},
		{"empty optional fields", minimal},
		{"binary data", binary},
		{"unicode key", unicode},
		{"empty data", emptyData},
		{"non-UTC time with nanoseconds", offset},
		{"large version", bigVersion},
		{"one nanosecond", oneNano},
		{"attribute at size limit", maxLen},
		{"last representable time", edges},
	}
}

func TestToBinaryFromBinaryRoundTrip(t *testing.T) {
	for _, tc := range roundTripCases() {
		t.Run(tc.name, func(t *testing.T) {
			h, body := ToBinary(tc.env)
			got, err := FromBinary(h, body)
			if err != nil {
				t.Fatalf("FromBinary: %v\nheader: %q", err, h)
			}
			if diff := envelopeDiff(tc.env, got); diff != "" {
				t.Fatalf("round trip lost information:\n%s", diff)
			}
			if got.Time.Location() != time.UTC {
				t.Errorf("Time location = %v, want UTC", got.Time.Location())
			}
		})
	}
}

func TestToBinaryHeaders(t *testing.T) {
	e := validEnvelope()
	e.Time = time.Date(2024, 5, 17, 11, 30, 15, 120000000, time.FixedZone("CEST", 2*3600))
	h, body := ToBinary(e)
	want := map[string]string{
		"ce-specversion":     "1.0",
		"ce-id":              e.ID,
		"ce-source":          "orders",
		"ce-type":            "shop.order.confirmed",
		"ce-time":            "2024-05-17T09:30:15.12Z",
		"ce-heraldversion":   "2",
		"ce-heraldkind":      "integration",
		"ce-datacontenttype": "application/json",
		"ce-partitionkey":    "customer-42",
		"ce-correlationid":   e.CorrelationID,
		"ce-causationid":     e.CausationID,
		"ce-traceparent":     e.TraceParent,
		"ce-tracestate":      "vendor=opaque",
	}
	if !maps.Equal(h, want) {
		t.Errorf("ToBinary header =\n%q\nwant\n%q", h, want)
	}
	if !bytes.Equal(body, e.Data) {
		t.Errorf("ToBinary body = %q, want %q", body, e.Data)
	}

	// Empty optional attributes are omitted.
	e.DataContentType, e.Key, e.CorrelationID, e.CausationID, e.TraceParent, e.TraceState = "", "", "", "", "", ""
	h, _ = ToBinary(e)
	for _, k := range []string{HeaderDataContentType, HeaderContentType, HeaderPartitionKey, HeaderCorrelationID, HeaderCausationID, HeaderTraceParent, HeaderTraceState} {
		if v, ok := h[k]; ok {
			t.Errorf("header %s = %q present for an empty attribute", k, v)
		}
	}
}

type fromBinaryErrorCase struct {
	name   string
	header map[string]string
	want   string // text the error must contain (names the attribute)
}

func fromBinaryErrorCases() []fromBinaryErrorCase {
	with := func(k, v string) map[string]string {
		h := validHeader()
		h[k] = v
		return h
	}
	without := func(k string) map[string]string {
		h := validHeader()
		delete(h, k)
		return h
	}
	cases := []fromBinaryErrorCase{
		{"missing specversion", without(HeaderSpecVersion), HeaderSpecVersion},
		{"type not UTF-8", with(HeaderType, "shop.\xffbad"), HeaderType + " is not valid UTF-8"},
		{"source not UTF-8", with(HeaderSource, "\xc3("), HeaderSource + " is not valid UTF-8"},
		{"key not UTF-8", with(HeaderPartitionKey, "k\xed\xa0\x80"), HeaderPartitionKey + " is not valid UTF-8"},
		{"id not UTF-8", with(HeaderID, "\xfe"), HeaderID + " is not valid UTF-8"},
		{"wrong specversion", with(HeaderSpecVersion, "0.3"), HeaderSpecVersion},
		{"specversion with space", with(HeaderSpecVersion, "1.0 "), HeaderSpecVersion},
		{"missing id", without(HeaderID), "empty id"},
		{"empty id", with(HeaderID, ""), "empty id"},
		{"missing type", without(HeaderType), "empty type"},
		{"missing source", without(HeaderSource), "empty source"},
		{"missing version", without(HeaderVersion), HeaderVersion},
		{"non-numeric version", with(HeaderVersion, "two"), HeaderVersion},
		{"fractional version", with(HeaderVersion, "1.5"), HeaderVersion},
		{"overflowing version", with(HeaderVersion, "99999999999999999999"), HeaderVersion},
		{"version 0", with(HeaderVersion, "0"), "version"},
		{"negative version", with(HeaderVersion, "-3"), "version"},
		{"missing time", without(HeaderTime), HeaderTime},
		{"bad time", with(HeaderTime, "17 May 2024"), HeaderTime},
		{"time without zone", with(HeaderTime, "2024-05-17T09:30:15"), HeaderTime},
		{"zero time", with(HeaderTime, "0001-01-01T00:00:00Z"), "time"},
		{"time after year 9999 in UTC", with(HeaderTime, "9999-12-31T23:59:59-01:00"), "time"},
		{"time before year 0 in UTC", with(HeaderTime, "0000-01-01T00:00:00+01:00"), "time"},
		{"missing kind", without(HeaderKind), "kind"},
		{"unknown kind", with(HeaderKind, "command"), "kind"},
		{"kind in upper case", with(HeaderKind, "Domain"), "kind"},
		{"conflicting duplicate header", func() map[string]string {
			h := without(HeaderID)
			h["Ce-Id"] = "a"
			h["CE-ID"] = "b"
			return h
		}(), HeaderID},
	}
	for _, k := range []string{HeaderSpecVersion, HeaderID, HeaderSource, HeaderType, HeaderTime, HeaderVersion, HeaderKind,
		HeaderContentType, HeaderPartitionKey, HeaderCorrelationID, HeaderCausationID, HeaderTraceParent, HeaderTraceState,
		HeaderDataContentType, HeaderDataSchema} {
		cases = append(cases, fromBinaryErrorCase{"oversized " + k, with(k, strings.Repeat("x", maxHeaderValue+1)), k})
	}
	// An oversized header in another case is caught too.
	h := validHeader()
	h["CE-Source"] = strings.Repeat("x", maxHeaderValue+1)
	delete(h, HeaderSource)
	cases = append(cases, fromBinaryErrorCase{"oversized header in upper case", h, HeaderSource})
	return cases
}

func TestFromBinaryRejects(t *testing.T) {
	for _, tc := range fromBinaryErrorCases() {
		t.Run(tc.name, func(t *testing.T) {
			e, err := FromBinary(tc.header, []byte("{}"))
			if err == nil {
				t.Fatalf("FromBinary accepted %q as %+v", tc.header, e)
			}
			if e != nil {
				t.Errorf("FromBinary returned an envelope with error %v", err)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("error %v does not wrap ErrInvalid", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not name %q", err, tc.want)
			}
			if len(err.Error()) > 2*maxHeaderValue {
				t.Errorf("error message is %d bytes long", len(err.Error()))
			}
		})
	}
}

func TestFromBinaryHeaderCase(t *testing.T) {
	want := validEnvelope()
	h, body := ToBinary(want)

	tests := []struct {
		name string
		key  func(string) string
	}{
		{"lower", strings.ToLower},
		{"upper", strings.ToUpper},
		{"canonical", func(k string) string { // Ce-Id, Content-Type
			parts := strings.Split(k, "-")
			for i, p := range parts {
				parts[i] = strings.ToUpper(p[:1]) + p[1:]
			}
			return strings.Join(parts, "-")
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			hc := make(map[string]string, len(h))
			for k, v := range h {
				hc[tc.key(k)] = v
			}
			if _, ok := hc["Ce-Id"]; tc.name == "canonical" && !ok {
				t.Fatalf("test bug: no Ce-Id in %q", hc)
			}
			got, err := FromBinary(hc, body)
			if err != nil {
				t.Fatalf("FromBinary: %v", err)
			}
			if diff := envelopeDiff(want, got); diff != "" {
				t.Fatalf("FromBinary with %s keys:\n%s", tc.name, diff)
			}
		})
	}

	t.Run("exact key wins", func(t *testing.T) {
		hc := cloneHeader(h)
		hc["CE-ID"] = "other"
		got, err := FromBinary(hc, body)
		if err != nil {
			t.Fatal(err)
		}
		if got.ID != want.ID {
			t.Errorf("ID = %q, want %q from the lower-case key", got.ID, want.ID)
		}
	})

	t.Run("same value under two cases", func(t *testing.T) {
		hc := cloneHeader(h)
		delete(hc, HeaderID)
		hc["Ce-Id"] = want.ID
		hc["CE-ID"] = want.ID
		got, err := FromBinary(hc, body)
		if err != nil {
			t.Fatal(err)
		}
		if got.ID != want.ID {
			t.Errorf("ID = %q, want %q", got.ID, want.ID)
		}
	})

	t.Run("unknown headers ignored", func(t *testing.T) {
		hc := cloneHeader(h)
		hc["ce-other"] = strings.Repeat("y", 2*maxHeaderValue)
		hc["x-request-id"] = "abc"
		got, err := FromBinary(hc, body)
		if err != nil {
			t.Fatal(err)
		}
		if diff := envelopeDiff(want, got); diff != "" {
			t.Fatal(diff)
		}
	})
}

func TestFromBinaryCanonicalizes(t *testing.T) {
	// Inputs that are accepted but not in ToBinary's form decode to the same
	// envelope as the canonical form.
	tests := []struct {
		name, key, value string
		check            func(*Envelope) bool
	}{
		{"time with offset", HeaderTime, "2024-05-17T11:30:15.5+02:00", func(e *Envelope) bool {
			return e.Time.Equal(time.Date(2024, 5, 17, 9, 30, 15, 500000000, time.UTC)) && e.Time.Location() == time.UTC
		}},
		{"time with trailing zeros", HeaderTime, "2024-05-17T09:30:15.500000000Z", func(e *Envelope) bool {
			return e.Time.Equal(time.Date(2024, 5, 17, 9, 30, 15, 500000000, time.UTC))
		}},
		{"version with plus sign", HeaderVersion, "+7", func(e *Envelope) bool { return e.Version == 7 }},
		{"version with leading zero", HeaderVersion, "007", func(e *Envelope) bool { return e.Version == 7 }},
		{"empty optional header", HeaderPartitionKey, "", func(e *Envelope) bool { return e.Key == "" }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := validHeader()
			h[tc.key] = tc.value
			e, err := FromBinary(h, nil)
			if err != nil {
				t.Fatal(err)
			}
			if !tc.check(e) {
				t.Fatalf("unexpected envelope %+v", e)
			}
			h2, body2 := ToBinary(e)
			e2, err := FromBinary(h2, body2)
			if err != nil {
				t.Fatal(err)
			}
			if diff := envelopeDiff(e, e2); diff != "" {
				t.Fatal(diff)
			}
		})
	}
}

func TestFromBinaryDoesNotModifyHeader(t *testing.T) {
	h := validHeader()
	h["Ce-Extra"] = "v"
	before := cloneHeader(h)
	if _, err := FromBinary(h, nil); err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(h, before) {
		t.Errorf("FromBinary modified its header: %q, want %q", h, before)
	}
}

// pairs yields kv as header key/value pairs, in order, repeats included.
func pairs(kv ...string) iter.Seq2[string, string] {
	return func(yield func(k, v string) bool) {
		for i := 0; i+1 < len(kv); i += 2 {
			if !yield(kv[i], kv[i+1]) {
				return
			}
		}
	}
}

func TestFromBinaryHeaders(t *testing.T) {
	want := validEnvelope()
	h, body := ToBinary(want)
	var base []string
	for k, v := range BinaryHeaders(want) {
		if k != HeaderID {
			base = append(base, k, v)
		}
	}
	tests := []struct {
		name    string
		id      []string // the ce-id headers, key and value, in order
		wantID  string
		wantErr string
	}{
		{"lower", []string{HeaderID, want.ID}, want.ID, ""},
		{"lower key twice: the first value", []string{HeaderID, want.ID, HeaderID, "second"}, want.ID, ""},
		{"lower key wins over other cases", []string{"CE-ID", "other", HeaderID, want.ID}, want.ID, ""},
		{"other cases that agree", []string{"Ce-Id", want.ID, "CE-ID", want.ID}, want.ID, ""},
		{"other cases that disagree", []string{"Ce-Id", want.ID, "CE-ID", "other"}, "", "different values"},
		{"missing", nil, "", "empty id"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := FromBinaryHeaders(pairs(append(append([]string{}, base...), tc.id...)...), body)
			if tc.wantErr != "" {
				if err == nil || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want ErrInvalid with %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.ID != tc.wantID {
				t.Errorf("ID = %q, want %q", got.ID, tc.wantID)
			}
		})
	}
	t.Run("same as FromBinary", func(t *testing.T) {
		got, err := FromBinaryHeaders(maps.All(h), body)
		if err != nil {
			t.Fatal(err)
		}
		if diff := envelopeDiff(want, got); diff != "" {
			t.Fatal(diff)
		}
	})
}

func TestBinaryHeadersIsToBinary(t *testing.T) {
	for _, tc := range roundTripCases() {
		h, _ := ToBinary(tc.env)
		got := maps.Collect(BinaryHeaders(tc.env))
		if !maps.Equal(h, got) {
			t.Errorf("%s: BinaryHeaders = %q, ToBinary = %q", tc.name, got, h)
		}
	}
}

// TestFromBinaryOlderHeraldVerbatim: a message of a herald from before the
// binding's percent-encoding (ce-heraldkind, content-type, no
// ce-datacontenttype) is read verbatim — a key "a%41b" stays "a%41b", not
// "aAb": decoding it would move the event to another partition, or change
// its inbox row. The same values from a sender that writes
// ce-datacontenttype are decoded.
func TestFromBinaryOlderHeraldVerbatim(t *testing.T) {
	want := validEnvelope()
	want.Key, want.CorrelationID, want.TraceState = "a%41b", `say "hi"`, "vendor=a%20b"
	h, body := ToBinary(validEnvelope())
	h[HeaderPartitionKey], h[HeaderCorrelationID], h[HeaderTraceState] = want.Key, want.CorrelationID, want.TraceState
	older := maps.Clone(h)
	older["content-type"] = older[HeaderDataContentType]
	delete(older, HeaderDataContentType)
	got, err := FromBinary(older, body)
	if err != nil {
		t.Fatal(err)
	}
	if got.Key != want.Key || got.CorrelationID != want.CorrelationID || got.TraceState != want.TraceState {
		t.Errorf("older herald's message read as key %q, correlation %q, tracestate %q; want them verbatim: %q, %q, %q",
			got.Key, got.CorrelationID, got.TraceState, want.Key, want.CorrelationID, want.TraceState)
	}
	got, err = FromBinary(h, body)
	if err != nil {
		t.Fatal(err)
	}
	if got.Key != "aAb" || got.CorrelationID != "say hi" || got.TraceState != "vendor=a b" {
		t.Errorf("current message read as key %q, correlation %q, tracestate %q; want them decoded", got.Key, got.CorrelationID, got.TraceState)
	}
}
