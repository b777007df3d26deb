package envelope

import (
	"fmt"
	"iter"
	"strconv"
	"time"
	"unicode/utf8"
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
var attributeHeaders = [numAttributes]string{
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
	for k, v := range BinaryHeaders(e) {
		h[k] = v
	}
	return h, e.Data
}

// BinaryHeaders yields the headers ToBinary puts in its map, in a fixed
// order, without building the map: for transports that copy them into
// their own header type.
func BinaryHeaders(e *Envelope) iter.Seq2[string, string] {
	return func(yield func(k, v string) bool) {
		_ = yield(HeaderSpecVersion, SpecVersion) &&
			yield(HeaderID, e.ID) &&
			yield(HeaderSource, e.Source) &&
			yield(HeaderType, e.Type) &&
			yield(HeaderTime, e.Time.UTC().Format(time.RFC3339Nano)) &&
			yield(HeaderVersion, strconv.Itoa(e.Version)) &&
			yield(HeaderKind, string(e.Kind)) &&
			yieldSet(yield, HeaderContentType, e.DataContentType) &&
			yieldSet(yield, HeaderPartitionKey, e.Key) &&
			yieldSet(yield, HeaderCorrelationID, e.CorrelationID) &&
			yieldSet(yield, HeaderCausationID, e.CausationID) &&
			yieldSet(yield, HeaderTraceParent, e.TraceParent) &&
			yieldSet(yield, HeaderTraceState, e.TraceState)
	}
}

// yieldSet yields k and v unless v is empty (an omitted optional attribute).
func yieldSet(yield func(k, v string) bool, k, v string) bool {
	return v == "" || yield(k, v)
}

// attribute indexes into attributeHeaders.
const (
	aSpecVersion = iota
	aID
	aSource
	aType
	aTime
	aVersion
	aKind
	aContentType
	aPartitionKey
	aCorrelationID
	aCausationID
	aTraceParent
	aTraceState
	numAttributes
)

// attributeIndex returns the index in attributeHeaders of header key k,
// matched case-insensitively (ASCII), and whether k is that name exactly
// (lower case); -1 if k names no attribute.
func attributeIndex(k string) (i int, exact bool) {
	switch k { // the common case: the names as ToBinary writes them
	case HeaderSpecVersion:
		return aSpecVersion, true
	case HeaderID:
		return aID, true
	case HeaderSource:
		return aSource, true
	case HeaderType:
		return aType, true
	case HeaderTime:
		return aTime, true
	case HeaderVersion:
		return aVersion, true
	case HeaderKind:
		return aKind, true
	case HeaderContentType:
		return aContentType, true
	case HeaderPartitionKey:
		return aPartitionKey, true
	case HeaderCorrelationID:
		return aCorrelationID, true
	case HeaderCausationID:
		return aCausationID, true
	case HeaderTraceParent:
		return aTraceParent, true
	case HeaderTraceState:
		return aTraceState, true
	}
	for i, name := range attributeHeaders {
		if asciiEqualFold(k, name) {
			return i, false
		}
	}
	return -1, false
}

// FromBinary rebuilds an envelope from CloudEvents binary content mode. It
// fails with an error wrapping ErrInvalid that names the first bad attribute,
// and accepts exactly the envelopes that Validate. Header keys are matched
// case-insensitively (ASCII); when a key is present in lower case that value
// is used, otherwise keys that differ only in case must agree. Headers it
// does not know are ignored. The returned envelope's Data is body (not
// copied) and its Time is in UTC.
func FromBinary(header map[string]string, body []byte) (*Envelope, error) {
	var a attributes
	for k, v := range header {
		a.add(k, v)
	}
	return a.envelope(body)
}

// FromBinaryHeaders is FromBinary over headers given as key/value pairs, for
// transports whose header type is not a map[string]string: it spares them
// building one. A key in lower case that occurs more than once counts with
// its first value; keys in other cases must all agree, as in FromBinary.
func FromBinaryHeaders(headers iter.Seq2[string, string], body []byte) (*Envelope, error) {
	a := new(attributes) // one allocation: the loop body is a closure
	for k, v := range headers {
		a.add(k, v)
	}
	return a.envelope(body)
}

// attributes collects the attribute headers in one pass over the headers,
// so that a missing attribute costs no search.
type attributes struct {
	vals     [numAttributes]string
	exact    [numAttributes]bool // vals[i] is from the lower-case key
	folded   [numAttributes]bool // vals[i] is from a key in another case
	conflict [numAttributes]bool // keys in other cases disagree
}

// add takes header hk: v into a if it names an attribute.
func (a *attributes) add(hk, v string) {
	i, ex := attributeIndex(hk)
	switch {
	case i < 0 || a.exact[i]:
	case ex:
		a.vals[i], a.exact[i] = v, true
	case a.folded[i]:
		a.conflict[i] = a.conflict[i] || v != a.vals[i]
	default:
		a.vals[i], a.folded[i] = v, true
	}
}

// envelope checks the collected attributes and builds the envelope.
func (a *attributes) envelope(body []byte) (*Envelope, error) {
	vals := &a.vals
	for i, k := range attributeHeaders {
		if a.conflict[i] && !a.exact[i] {
			return nil, fmt.Errorf("%w: header %s given more than once, in different cases, with different values", ErrInvalid, k)
		}
		if len(vals[i]) > maxHeaderValue {
			return nil, fmt.Errorf("%w: header %s longer than %d bytes", ErrInvalid, k, maxHeaderValue)
		}
		if !utf8.ValidString(vals[i]) {
			// Attributes become log fields, trace records and metric
			// labels: bytes that are not text are refused here, before
			// any of those sees them.
			return nil, fmt.Errorf("%w: header %s is not valid UTF-8", ErrInvalid, k)
		}
	}
	if sv := vals[aSpecVersion]; sv != SpecVersion {
		return nil, fmt.Errorf("%w: header %s is %q, want %q", ErrInvalid, HeaderSpecVersion, sv, SpecVersion)
	}
	e := &Envelope{
		ID:              vals[aID],
		Source:          vals[aSource],
		Type:            vals[aType],
		Kind:            Kind(vals[aKind]),
		DataContentType: vals[aContentType],
		Key:             vals[aPartitionKey],
		CorrelationID:   vals[aCorrelationID],
		CausationID:     vals[aCausationID],
		TraceParent:     vals[aTraceParent],
		TraceState:      vals[aTraceState],
		Data:            body,
	}
	v := vals[aVersion]
	n, err := strconv.Atoi(v)
	if err != nil {
		return nil, fmt.Errorf("%w: header %s is %q, not a number", ErrInvalid, HeaderVersion, v)
	}
	e.Version = n
	ts := vals[aTime]
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
