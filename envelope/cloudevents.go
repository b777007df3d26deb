package envelope

import (
	"fmt"
	"strconv"
	"time"
)

// SpecVersion is the CloudEvents version herald speaks.
const SpecVersion = "1.0"

// Header names of the CloudEvents binary content mode. Keys are lower case;
// transports whose headers are case-insensitive match them as such.
const (
	HeaderSpecVersion   = "ce-specversion"
	HeaderID            = "ce-id"
	HeaderSource        = "ce-source"
	HeaderType          = "ce-type"
	HeaderTime          = "ce-time"
	HeaderContentType   = "content-type" // datacontenttype
	HeaderPartitionKey  = "ce-partitionkey"
	HeaderCorrelationID = "ce-correlationid"
	HeaderCausationID   = "ce-causationid"
	HeaderTraceParent   = "ce-traceparent"
	HeaderTraceState    = "ce-tracestate"
	HeaderVersion       = "ce-heraldversion"
	HeaderKind          = "ce-heraldkind"
)

// maxHeaderValue bounds any decoded attribute, so a hostile message cannot
// make herald keep megabytes of header text. Validate applies the same bound,
// so every valid envelope can be decoded again.
const maxHeaderValue = 4096

// attributeHeaders lists every header FromBinary reads.
var attributeHeaders = [...]string{
	HeaderSpecVersion, HeaderID, HeaderSource, HeaderType, HeaderTime, HeaderVersion, HeaderKind,
	HeaderContentType, HeaderPartitionKey, HeaderCorrelationID, HeaderCausationID, HeaderTraceParent, HeaderTraceState,
}

// ToBinary maps e onto CloudEvents 1.0 binary content mode: attributes in
// headers (keys in lower case, Time in UTC as RFC 3339 with nanoseconds),
// Data as the body (not copied). Optional attributes that are empty are
// omitted. ToBinary does not check e; for every e that Validates,
// FromBinary(ToBinary(e)) returns an equal envelope, with Time in UTC.
func ToBinary(e *Envelope) (map[string]string, []byte) {
	h := make(map[string]string, len(attributeHeaders))
	h[HeaderSpecVersion] = SpecVersion
	h[HeaderID] = e.ID
	h[HeaderSource] = e.Source
	h[HeaderType] = e.Type
	h[HeaderTime] = e.Time.UTC().Format(time.RFC3339Nano)
	h[HeaderVersion] = strconv.Itoa(e.Version)
	h[HeaderKind] = string(e.Kind)
	set := func(k, v string) {
		if v != "" {
			h[k] = v
		}
	}
	set(HeaderContentType, e.DataContentType)
	set(HeaderPartitionKey, e.Key)
	set(HeaderCorrelationID, e.CorrelationID)
	set(HeaderCausationID, e.CausationID)
	set(HeaderTraceParent, e.TraceParent)
	set(HeaderTraceState, e.TraceState)
	return h, e.Data
}

// FromBinary rebuilds an envelope from CloudEvents binary content mode. It
// fails with an error wrapping ErrInvalid that names the first bad attribute,
// and accepts exactly the envelopes that Validate. Header keys are matched
// case-insensitively (ASCII); when a key is present in lower case that value
// is used, otherwise keys that differ only in case must agree. Headers it
// does not know are ignored. The returned envelope's Data is body (not
// copied) and its Time is in UTC.
func FromBinary(header map[string]string, body []byte) (*Envelope, error) {
	vals := make(map[string]string, len(attributeHeaders))
	for _, k := range attributeHeaders {
		v, err := lookupHeader(header, k)
		if err != nil {
			return nil, err
		}
		if len(v) > maxHeaderValue {
			return nil, fmt.Errorf("%w: header %s longer than %d bytes", ErrInvalid, k, maxHeaderValue)
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

// asciiEqualFold reports whether s and t are equal under ASCII case folding
// (unlike strings.EqualFold, "ce-heraldkind" does not match a Kelvin sign).
func asciiEqualFold(s, t string) bool {
	if len(s) != len(t) {
		return false
	}
	for i := 0; i < len(s); i++ {
		a, b := s[i], t[i]
		if 'A' <= a && a <= 'Z' {
			a += 'a' - 'A'
		}
		if 'A' <= b && b <= 'Z' {
			b += 'a' - 'A'
		}
		if a != b {
			return false
		}
	}
	return true
}
