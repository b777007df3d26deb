package envelope

import (
	"errors"
	"maps"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestEncodeHeaderValue(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", ""},
		{"shop.order.confirmed", "shop.order.confirmed"},
		{"a b", "a%20b"},
		{`say "hi"`, "say%20%22hi%22"},
		{"50%", "50%25"},
		{"Euro € 😀", "Euro%20%E2%82%AC%20%F0%9F%98%80"}, // the binding's own example
		{"\x01\t\x7f", "%01%09%7F"},
		{"客户-42", "%E5%AE%A2%E6%88%B7-42"},
		{"~!#$&'()*+,/:;<=>?@[\\]^_`{|}", "~!#$&'()*+,/:;<=>?@[\\]^_`{|}"},
	}
	for _, tc := range tests {
		if got := encodeHeaderValue(tc.in); got != tc.want {
			t.Errorf("encodeHeaderValue(%q) = %q, want %q", tc.in, got, tc.want)
		}
		if got := decodeHeaderValue(tc.want); got != tc.in {
			t.Errorf("decodeHeaderValue(%q) = %q, want %q", tc.want, got, tc.in)
		}
	}
}

func TestDecodeHeaderValue(t *testing.T) {
	tests := []struct {
		name, in, want string
		valid          bool // the result is UTF-8
	}{
		{"plain", "orders", "orders", true},
		{"lower-case hex", "%e2%82%ac", "€", true},
		{"needless escape", "%41%42c", "ABc", true},
		{"quoted string", `"a b"`, "a b", true},
		{"quoted string with escapes", `"a\"b\\c"`, `a"b\c`, true},
		{"quoted part of a value", `x="1 2";y`, "x=1 2;y", true},
		{"quoted then percent-decoded once", `"%2541"`, "%41", true},
		{"older herald: bare percent", "100%", "100%", true},
		{"older herald: percent without hex", "%zz%4", "%zz%4", true},
		{"older herald: unterminated quote", `5" tall`, `5" tall`, true},
		{"overlong encoding of space", "%C0%A0", "\xc0\xa0", false},
		{"lone continuation byte", "%80", "\x80", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := decodeHeaderValue(tc.in)
			if got != tc.want {
				t.Errorf("decodeHeaderValue(%q) = %q, want %q", tc.in, got, tc.want)
			}
			if utf8.ValidString(got) != tc.valid {
				t.Errorf("decodeHeaderValue(%q) = %q: valid UTF-8 %v, want %v", tc.in, got, !tc.valid, tc.valid)
			}
		})
	}
	t.Run("invalid UTF-8 is refused", func(t *testing.T) {
		h := validHeader()
		h[HeaderPartitionKey] = "%C0%A0"
		_, err := FromBinary(h, nil)
		if err == nil || !strings.Contains(err.Error(), HeaderPartitionKey+" is not valid UTF-8") {
			t.Fatalf("err = %v, want the key named as not UTF-8", err)
		}
	})
}

func TestSchemaVersion(t *testing.T) {
	tests := []struct {
		in   string
		want int // 0: none
	}{
		{"https://example.com/schemas/shop.order.confirmed/v2", 2},
		{"https://example.com/schemas/shop.order.confirmed.v3.json", 3},
		{"urn:shop:order.confirmed:v12", 12},
		{"shop.order.confirmed.V4", 4},
		{"https://example.com/v1/shop.order.confirmed", 0}, // the version must be last
		{"https://example.com/schemas/shop.order.confirmed", 0},
		{"https://example.com/schemas/v0", 0},
		{"https://example.com/schemas/v02", 0},
		{"https://example.com/schemas/v2a", 0},
		{"https://example.com/schemas/v", 0},
		{"https://example.com/schemas/v99999999999", 0},
		{"v2", 0}, // no separator: not a URI with segments
		{"", 0},
	}
	for _, tc := range tests {
		n, ok := SchemaVersion(tc.in)
		if ok != (tc.want != 0) || n != tc.want {
			t.Errorf("SchemaVersion(%q) = %d, %v; want %d", tc.in, n, ok, tc.want)
		}
	}
}

// plainHeader is what a CloudEvents SDK sends in binary mode: no herald
// extensions.
func plainHeader() map[string]string {
	return map[string]string{
		"ce-specversion":     "1.0",
		"ce-id":              "evt-1",
		"ce-source":          "/analytics",
		"ce-type":            "shop.product.trending",
		"ce-time":            "2024-05-17T09:30:15Z",
		"ce-datacontenttype": "application/json",
	}
}

const structuredBody = `{"specversion":"1.0","id":"evt-2","source":"/analytics","type":"shop.product.trending",
	"time":"2024-05-17T09:30:15Z","datacontenttype":"application/json","partitionkey":"p-7",
	"data":{"product":"p-7","count":3}}`

func TestDecode(t *testing.T) {
	with := func(h map[string]string, kv ...string) map[string]string {
		h = maps.Clone(h)
		for i := 0; i+1 < len(kv); i += 2 {
			if kv[i+1] == "-" {
				delete(h, kv[i])
			} else {
				h[kv[i]] = kv[i+1]
			}
		}
		return h
	}
	own := validHeader()
	tests := []struct {
		name   string
		header map[string]string
		body   string
		read   Read
		check  func(e *Envelope) string // "" when e is as expected
	}{
		{"herald's own", own, "{}", Read{}, func(e *Envelope) string {
			return envelopeDiff(e, func() *Envelope { w := validEnvelope(); w.Data = []byte("{}"); return w }())
		}},
		{"herald before ce-datacontenttype", with(own, HeaderDataContentType, "-", HeaderContentType, "application/json"), "{}", Read{},
			func(e *Envelope) string { return want("DataContentType", e.DataContentType, "application/json") }},
		{"ce-datacontenttype wins over content-type", with(own, HeaderContentType, "text/plain"), "{}", Read{},
			func(e *Envelope) string { return want("DataContentType", e.DataContentType, "application/json") }},
		{"plain binary: version 1, the subscription's kind", plainHeader(), `{"count":1}`, Read{Foreign: true},
			func(e *Envelope) string {
				return want("ID", e.ID, "evt-1") + want("Kind", string(e.Kind), "integration") + wantInt("Version", e.Version, 1) +
					want("Data", string(e.Data), `{"count":1}`)
			}},
		{"plain binary: the version dataschema names", with(plainHeader(), HeaderDataSchema, "https://example.com/schemas/shop.product.trending/v2"), "{}",
			Read{Foreign: true}, func(e *Envelope) string { return wantInt("Version", e.Version, 2) }},
		{"plain binary: ce-heraldversion wins over dataschema", with(plainHeader(), HeaderDataSchema, "urn:x:v2", HeaderVersion, "3"), "{}",
			Read{Foreign: true}, func(e *Envelope) string { return wantInt("Version", e.Version, 3) }},
		{"plain binary: percent-encoded key", with(plainHeader(), HeaderPartitionKey, "order%2042%20%E2%9C%93"), "{}",
			Read{Foreign: true}, func(e *Envelope) string { return want("Key", e.Key, "order 42 ✓") }},
		{"binary with herald's extensions is herald's", with(plainHeader(), HeaderKind, "integration", HeaderVersion, "1"), "{}",
			Read{}, func(e *Envelope) string { return "" }},
		{"an empty ce-heraldkind is foreign", with(plainHeader(), HeaderKind, `""`), "{}",
			Read{Foreign: true}, func(e *Envelope) string { return want("Kind", string(e.Kind), "integration") }},
		{"structured", map[string]string{"content-type": "application/cloudevents+json; charset=UTF-8"}, structuredBody,
			Read{Structured: true, Foreign: true}, func(e *Envelope) string {
				return want("ID", e.ID, "evt-2") + want("Key", e.Key, "p-7") + wantInt("Version", e.Version, 1) +
					want("Kind", string(e.Kind), "integration") + want("Data", string(e.Data), `{"product":"p-7","count":3}`) +
					want("DataContentType", e.DataContentType, "application/json")
			}},
		{"structured without headers (the Go SDK)", nil, structuredBody, Read{Structured: true, Foreign: true},
			func(e *Envelope) string { return want("ID", e.ID, "evt-2") }},
		{"structured: data_base64, herald's extensions", map[string]string{"Content-Type": "application/cloudevents+json"},
			`{"specversion":"1.0","id":"x","source":"s","type":"t","time":"2024-05-17T09:30:15Z","heraldversion":2,
			"heraldkind":"integration","datacontenttype":"application/octet-stream","data_base64":"AAH/"}`,
			Read{Structured: true}, func(e *Envelope) string {
				return wantInt("Version", e.Version, 2) + want("Data", string(e.Data), "\x00\x01\xff")
			}},
		{"structured: text data", map[string]string{"content-type": "application/cloudevents"},
			`{"specversion":"1.0","id":"x","source":"s","type":"t","time":"2024-05-17T09:30:15Z","datacontenttype":"text/plain","data":"a \"b\""}`,
			Read{Structured: true, Foreign: true}, func(e *Envelope) string { return want("Data", string(e.Data), `a "b"`) }},
		{"structured: dataschema", map[string]string{"content-type": "application/cloudevents+json"},
			`{"specversion":"1.0","id":"x","source":"s","type":"t","time":"2024-05-17T09:30:15Z","dataschema":"urn:t:v5","data":null}`,
			Read{Structured: true, Foreign: true}, func(e *Envelope) string {
				return wantInt("Version", e.Version, 5) + want("Data", string(e.Data), "")
			}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e, read, err := Decode(maps.All(tc.header), []byte(tc.body), KindIntegration)
			if err != nil {
				t.Fatal(err)
			}
			if read != tc.read {
				t.Errorf("Read = %+v, want %+v", read, tc.read)
			}
			if d := tc.check(e); d != "" {
				t.Error(d)
			}
			if err := e.Validate(); err != nil {
				t.Error(err)
			}
		})
	}
}

func want(name, got, want string) string {
	if got == want {
		return ""
	}
	return name + ": got " + strings.ReplaceAll(got, "\n", `\n`) + ", want " + want + "\n"
}

func wantInt(name string, got, w int) string {
	if got == w {
		return ""
	}
	return name + ": got " + strconv.Itoa(got) + ", want " + strconv.Itoa(w) + "\n"
}

func TestDecodeRejects(t *testing.T) {
	ce := map[string]string{"content-type": "application/cloudevents+json"}
	tests := []struct {
		name    string
		header  map[string]string
		body    string
		wantErr string
		notErr  string
		id, typ string
		version int
	}{
		{"batch", map[string]string{"content-type": "application/cloudevents-batch+json"}, "[]",
			"batch content mode is not supported", "", "", "", 0},
		{"another event format", map[string]string{"content-type": "application/cloudevents+avro"}, "x",
			"other than JSON", "", "", "", 0},
		{"structured without specversion", ce, `{"id":"e-1","type":"shop.x","source":"s","heraldversion":"2"}`,
			`no member "specversion"`, `is ""`, "e-1", "shop.x", 2},
		{"structured, bad time", ce, `{"specversion":"1.0","id":"e-1","type":"shop.x","source":"s","time":"yesterday","dataschema":"urn:shop.x:v3"}`,
			`member "time" is "yesterday"`, "", "e-1", "shop.x", 3},
		{"structured, not JSON", ce, `{"id":`, "not a JSON object", "", "", "", 0},
		{"structured, id not a string", ce, `{"specversion":"1.0","id":{"a":1},"type":"shop.x"}`, `member "id"`, "", "", "shop.x", 1},
		{"structured, data and data_base64", ce, `{"specversion":"1.0","id":"e","type":"t","source":"s","time":"2024-05-17T09:30:15Z","data":1,"data_base64":"AA=="}`,
			`both "data" and "data_base64"`, "", "e", "t", 1},
		{"binary without time", func() map[string]string { h := plainHeader(); delete(h, HeaderTime); return h }(), "{}",
			"no header ce-time", "", "evt-1", "shop.product.trending", 1},
		{"binary with a bad version", func() map[string]string { h := plainHeader(); h[HeaderVersion] = "two"; return h }(), "{}",
			HeaderVersion, "", "evt-1", "shop.product.trending", 0},
		{"neither mode", map[string]string{"x-other": "1"}, "plain text", "no header ce-specversion", `is ""`, "", "", 1},
		{"content-type twice, in different cases", func() map[string]string {
			h := plainHeader()
			h["Content-Type"], h["CONTENT-TYPE"] = "application/cloudevents+json", "application/json"
			return h
		}(), `{"specversion":"1.0","id":"e","type":"t","source":"s","time":"2024-05-17T09:30:15Z"}`,
			"in different cases", "", "evt-1", "shop.product.trending", 1},
		{"percent-encoded id", func() map[string]string {
			h := plainHeader()
			h[HeaderID] = "evt%201"
			h[HeaderSpecVersion] = "0.3"
			return h
		}(), "{}", HeaderSpecVersion, "", "evt 1", "shop.product.trending", 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e, _, err := Decode(maps.All(tc.header), []byte(tc.body), KindIntegration)
			if err == nil {
				t.Fatalf("Decode accepted it: %+v", e)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("%v does not wrap ErrInvalid", err)
			}
			if !strings.Contains(err.Error(), tc.wantErr) || tc.notErr != "" && strings.Contains(err.Error(), tc.notErr) {
				t.Errorf("error %q: want %q in it, not %q", err, tc.wantErr, tc.notErr)
			}
			var de *DecodeError
			if !errors.As(err, &de) {
				t.Fatalf("%T is not a *DecodeError", err)
			}
			if de.ID != tc.id || de.Type != tc.typ || de.Version != tc.version {
				t.Errorf("DecodeError names %q %q v%d, want %q %q v%d", de.ID, de.Type, de.Version, tc.id, tc.typ, tc.version)
			}
		})
	}
}

// FuzzDecodeStructured feeds Decode structured-mode bodies. It must never
// panic; an error wraps ErrInvalid and is a *DecodeError whose names are
// text; an envelope Validates, and survives herald's binary mode
// (ToBinary, FromBinary) unchanged, whatever a foreign producer put in it.
func FuzzDecodeStructured(f *testing.F) {
	f.Add(structuredBody, "application/cloudevents+json")
	f.Add(structuredBody, "")
	f.Add(`{"specversion":"1.0","id":"x","source":"s","type":"t","time":"2024-05-17T09:30:15Z","heraldversion":2,
		"heraldkind":"notification","datacontenttype":"application/octet-stream","data_base64":"AAH/"}`, "application/cloudevents")
	f.Add(`{"specversion":"1.0","id":"x y","source":"s%20","type":"t","time":"2024-05-17T09:30:15+02:00","dataschema":"urn:t:v9",
		"partitionkey":"客户 \"42\"","data":"text","datacontenttype":"text/plain"}`, "application/cloudevents+json; charset=utf-8")
	f.Add(`{"specversion":"1.0","id":"x","source":"s","type":"t","time":"2024-05-17T09:30:15Z","heraldkind":"domain","data":[1,2]}`, "")
	f.Add(`{"specversion":"0.3","id":1,"type":null}`, "application/cloudevents+json")
	f.Add(`{"id":"e","type":"t","time":"9999-12-31T23:59:59-01:00","specversion":"1.0","source":"s"}`, "")
	f.Add(`[{"specversion":"1.0"}]`, MediaTypeBatch)
	f.Add(`{"specversion":"1.0","id":"\ud800","source":"s","type":"t","time":"2024-05-17T09:30:15Z","heraldversion":"0"}`, "")
	f.Fuzz(func(t *testing.T, body, contentType string) {
		var h map[string]string
		if contentType != "" {
			h = map[string]string{HeaderContentType: contentType}
		}
		e, read, err := Decode(maps.All(h), []byte(body), KindIntegration)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error does not wrap ErrInvalid: %v", err)
			}
			var de *DecodeError
			if !errors.As(err, &de) {
				t.Fatalf("error is a %T, not a *DecodeError", err)
			}
			if !utf8.ValidString(de.ID) || !utf8.ValidString(de.Type) || len(de.ID) > maxHeaderValue || len(de.Type) > maxHeaderValue || de.Version < 0 {
				t.Fatalf("DecodeError names %q %q v%d", de.ID, de.Type, de.Version)
			}
			if e != nil {
				t.Fatalf("an envelope and an error: %v", err)
			}
			return
		}
		if !read.Structured && contentType != "" {
			t.Fatalf("content-type %q read in binary mode", contentType)
		}
		if err := e.Validate(); err != nil {
			t.Fatalf("Decode accepted an envelope that does not validate: %v", err)
		}
		h2, body2 := ToBinary(e)
		e2, err := FromBinary(h2, body2)
		if err != nil {
			t.Fatalf("FromBinary(ToBinary(e)) failed: %v\nheader: %q", err, h2)
		}
		if diff := envelopeDiff(e, e2); diff != "" {
			t.Fatalf("binary round trip of a structured event:\n%s", diff)
		}
	})
}

// FuzzHeaderValue checks that every string survives percent-encoding.
func FuzzHeaderValue(f *testing.F) {
	for _, s := range []string{"", "a b", `"q"`, "50%", "Euro € 😀", "\x00\xff", "%41"} {
		f.Add(s)
	}
	f.Add("0123456789abcdef\x7f0123456")
	f.Add("01234567\x2001234567\x80\xff\x21\x7e%\"")
	f.Fuzz(func(t *testing.T, s string) {
		naive := false
		for i := 0; i < len(s); i++ {
			naive = naive || !headerSafe(s[i])
		}
		if needsEncoding(s) != naive {
			t.Fatalf("needsEncoding(%q) = %v, want %v", s, !naive, naive)
		}
		enc := encodeHeaderValue(s)
		for i := 0; i < len(enc); i++ {
			if c := enc[i]; c <= 0x20 || c >= 0x7f || c == '"' {
				t.Fatalf("encodeHeaderValue(%q) = %q has byte %#x", s, enc, c)
			}
		}
		if got := decodeHeaderValue(enc); got != s {
			t.Fatalf("decodeHeaderValue(encodeHeaderValue(%q)) = %q", s, got)
		}
	})
}

// TestNeedsEncodingEveryByte puts every byte value at every position of a
// 16-byte value of safe bytes.
func TestNeedsEncodingEveryByte(t *testing.T) {
	for c := 0; c < 256; c++ {
		for pos := 0; pos < 16; pos++ {
			b := []byte("abcdefghijklmnop")
			b[pos] = byte(c)
			if got, want := needsEncoding(string(b)), !headerSafe(byte(c)); got != want {
				t.Fatalf("needsEncoding(%q) = %v, want %v", b, got, want)
			}
		}
	}
}
