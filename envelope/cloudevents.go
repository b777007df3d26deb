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
	HeaderSpecVersion = "ce-specversion"
	HeaderID          = "ce-id"
	HeaderSource      = "ce-source"
	HeaderType        = "ce-type"
	HeaderTime        = "ce-time"
	// HeaderDataContentType carries datacontenttype, as the NATS protocol
	// binding maps it; herald writes it.
	HeaderDataContentType = "ce-datacontenttype"
	// HeaderContentType is herald's older header for datacontenttype in
	// binary mode, still read when ce-datacontenttype is absent. A value
	// of application/cloudevents+json marks a structured-mode message.
	HeaderContentType = "content-type"
	// HeaderDataSchema carries dataschema: its version suffix names the
	// contract version of an event without ce-heraldversion (see Decode).
	HeaderDataSchema    = "ce-dataschema"
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
	HeaderDataContentType, HeaderDataSchema,
}

// ToBinary maps e onto CloudEvents 1.0 binary content mode: attributes in
// headers (keys in lower case, Time in UTC as RFC 3339 with nanoseconds,
// values percent-encoded as the NATS protocol binding requires: space,
// '"', '%' and every byte outside printable ASCII as %XY), Data as the body
// (not copied). Optional attributes that are empty are omitted. ToBinary does not check e; for every e that Validates,
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
			yield(HeaderID, encodeHeaderValue(e.ID)) &&
			yield(HeaderSource, encodeHeaderValue(e.Source)) &&
			yield(HeaderType, encodeHeaderValue(e.Type)) &&
			yield(HeaderTime, e.Time.UTC().Format(time.RFC3339Nano)) &&
			yield(HeaderVersion, strconv.Itoa(e.Version)) &&
			yield(HeaderKind, encodeHeaderValue(string(e.Kind))) &&
			yieldSet(yield, HeaderDataContentType, e.DataContentType) &&
			yieldSet(yield, HeaderPartitionKey, e.Key) &&
			yieldSet(yield, HeaderCorrelationID, e.CorrelationID) &&
			yieldSet(yield, HeaderCausationID, e.CausationID) &&
			yieldSet(yield, HeaderTraceParent, e.TraceParent) &&
			yieldSet(yield, HeaderTraceState, e.TraceState)
	}
}

// yieldSet yields k and v, percent-encoded, unless v is empty (an omitted
// optional attribute).
func yieldSet(yield func(k, v string) bool, k, v string) bool {
	return v == "" || yield(k, encodeHeaderValue(v))
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
	aDataContentType
	aDataSchema
	numAttributes
)

// attrSet must hold every attribute.
var _ [16 - numAttributes]struct{}

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
	case HeaderDataContentType:
		return aDataContentType, true
	case HeaderDataSchema:
		return aDataSchema, true
	}
	for i, name := range attributeHeaders {
		if asciiEqualFold(k, name) {
			return i, false
		}
	}
	return -1, false
}

// FromBinary rebuilds an envelope from herald's binary content mode: the
// CloudEvents attributes and herald's extensions ce-heraldversion and
// ce-heraldkind, both required. It fails with an error wrapping ErrInvalid
// that names the first bad attribute (a *DecodeError: it also names the
// id, type and version it could read), and accepts exactly the envelopes
// that Validate. Header keys are matched case-insensitively (ASCII); when
// a key is present in lower case that value is used, otherwise keys that
// differ only in case must agree. Values are percent-decoded as the NATS
// protocol binding requires (see ToBinary; a '%' not followed by two hex
// digits, as herald wrote before it encoded values, stands for itself).
// datacontenttype is ce-datacontenttype, or when that is absent
// content-type (herald's older form). Headers it does not know are
// ignored. The returned envelope's Data is body (not copied) and its Time
// is in UTC. Decode reads what other CloudEvents producers send as well.
func FromBinary(header map[string]string, body []byte) (*Envelope, error) {
	var a attributes
	for k, v := range header {
		a.add(k, v)
	}
	return a.envelope(body, strict)
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
	return a.envelope(body, strict)
}

// attributes collects the attribute headers in one pass over the headers,
// so that a missing attribute costs no search.
type attributes struct {
	vals [numAttributes]string
	// Bit sets by attribute index (kept small: the struct is allocated
	// for every message):
	exact    attrSet // vals[i] is from the lower-case key
	folded   attrSet // vals[i] is from a key in another case
	conflict attrSet // keys in other cases disagree
	long     attrSet // vals[i] was too long to decode
	// decoded: vals are the attributes themselves, not header values to
	// percent-decode (structured mode, or decoded already).
	decoded bool
	// structured: vals are members of a JSON-format event.
	structured bool
}

// name names attribute i in an error: its header, or its member in
// structured mode.
func (a *attributes) name(i int) string {
	if a.structured {
		return fmt.Sprintf("member %q", structuredNames[i])
	}
	return "header " + attributeHeaders[i]
}

// add takes header hk: v into a if it names an attribute.
func (a *attributes) add(hk, v string) {
	i, ex := attributeIndex(hk)
	switch {
	case i < 0 || a.exact.has(i):
	case ex:
		a.vals[i] = v
		a.exact.add(i)
	case a.folded.has(i):
		if v != a.vals[i] {
			a.conflict.add(i)
		}
	default:
		a.vals[i] = v
		a.folded.add(i)
	}
}

// set takes attribute i from a structured-mode event.
func (a *attributes) set(i int, v string) {
	a.vals[i] = v
	a.exact.add(i)
}

// has reports whether attribute i was given.
func (a *attributes) has(i int) bool { return a.exact.has(i) || a.folded.has(i) }

// attrSet is a set of attribute indexes.
type attrSet uint16

func (s attrSet) has(i int) bool { return s&(1<<i) != 0 }
func (s *attrSet) add(i int)     { *s |= 1 << i }

// readMode says how lenient attributes.envelope is.
type readMode struct {
	// kind is the kind of an event without ce-heraldkind; "" requires it.
	kind Kind
	// versionRule: an event without ce-heraldversion gets the version
	// its dataschema names, else 1 (see SchemaVersion); otherwise the
	// header is required.
	versionRule bool
}

// strict is FromBinary's reading: herald's own form.
var strict = readMode{}

// maxEncodedValue bounds a header value before percent-decoding: every
// attribute Validate accepts encodes into it.
const maxEncodedValue = 3 * maxHeaderValue

// olderHerald reports whether the headers are those of a herald from
// before the binding's percent-encoding: herald's own (ce-heraldkind) with
// content-type and without ce-datacontenttype, which herald writes since.
// That herald wrote values as they were; decoding them would change a key
// such as "a%41b" or an id, and with it the event's partition, inbox row
// or trace.
func (a *attributes) olderHerald() bool {
	return a.has(aKind) && a.has(aContentType) && !a.has(aDataContentType)
}

// envelope checks the collected attributes and builds the envelope. Its
// error is a *DecodeError naming what it could read.
func (a *attributes) envelope(body []byte, m readMode) (*Envelope, error) {
	vals := &a.vals
	if !a.decoded {
		verbatim := a.olderHerald()
		for i, v := range vals {
			if len(v) > maxEncodedValue {
				a.long.add(i)
				continue
			}
			if !verbatim {
				vals[i] = decodeHeaderValue(v)
			}
		}
		a.decoded = true
	}
	for i := range attributeHeaders {
		if a.conflict.has(i) && !a.exact.has(i) {
			return nil, a.fail(m, fmt.Errorf("%w: %s given more than once, in different cases, with different values", ErrInvalid, a.name(i)))
		}
		if a.long.has(i) || len(vals[i]) > maxHeaderValue {
			return nil, a.fail(m, fmt.Errorf("%w: %s longer than %d bytes", ErrInvalid, a.name(i), maxHeaderValue))
		}
		if !utf8.ValidString(vals[i]) {
			// Attributes become log fields, trace records and metric
			// labels: bytes that are not text are refused here, before
			// any of those sees them.
			return nil, a.fail(m, fmt.Errorf("%w: %s is not valid UTF-8", ErrInvalid, a.name(i)))
		}
	}
	if sv := vals[aSpecVersion]; sv != SpecVersion {
		if sv == "" && m.versionRule && !a.has(aSpecVersion) {
			return nil, a.fail(m, fmt.Errorf("%w: no header %s: not a CloudEvent in binary mode (a structured-mode one has content-type %s)", ErrInvalid, HeaderSpecVersion, MediaTypeStructured))
		}
		return nil, a.fail(m, fmt.Errorf("%w: %s is %q, want %q", ErrInvalid, a.name(aSpecVersion), sv, SpecVersion))
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
	if a.has(aDataContentType) {
		e.DataContentType = vals[aDataContentType]
	}
	if e.Kind == "" {
		e.Kind = m.kind
	}
	n, err := a.version(m)
	if err != nil {
		return nil, a.fail(m, err)
	}
	e.Version = n
	ts := vals[aTime]
	if ts == "" && m.versionRule {
		return nil, a.fail(m, fmt.Errorf("%w: no %s: herald needs the time an event happened (optional in CloudEvents)", ErrInvalid, a.name(aTime)))
	}
	t, err := time.Parse(time.RFC3339Nano, ts)
	if err != nil {
		return nil, a.fail(m, fmt.Errorf("%w: %s is %q: %v", ErrInvalid, a.name(aTime), ts, err))
	}
	e.Time = t.UTC()
	if err := e.Validate(); err != nil {
		return nil, a.fail(m, err)
	}
	return e, nil
}

// version is the event's contract version: ce-heraldversion, or under
// m.versionRule, when that is absent, the one dataschema names, else 1.
func (a *attributes) version(m readMode) (int, error) {
	v := a.vals[aVersion]
	if v == "" && m.versionRule {
		if n, ok := SchemaVersion(a.vals[aDataSchema]); ok {
			return n, nil
		}
		return 1, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return 0, fmt.Errorf("%w: %s is %q, not a number", ErrInvalid, a.name(aVersion), v)
	}
	return n, nil
}

// fail wraps err in a DecodeError with the id, type and version a holds,
// those that are text of a sane size.
func (a *attributes) fail(m readMode, err error) error {
	de := &DecodeError{Err: err}
	if !a.decoded {
		return de
	}
	usable := func(i int) bool {
		v := a.vals[i]
		return !a.long.has(i) && len(v) <= maxHeaderValue && utf8.ValidString(v)
	}
	if usable(aID) {
		de.ID = a.vals[aID]
	}
	if usable(aType) {
		de.Type = a.vals[aType]
	}
	if usable(aVersion) && usable(aDataSchema) {
		if n, err := a.version(m); err == nil && n >= 1 {
			de.Version = n
		}
	}
	return de
}

// DecodeError is why a message could not be decoded, with the id, type and
// version it names as far as they could be read (empty or 0 when not):
// what a dead letter of it records. It wraps ErrInvalid.
type DecodeError struct {
	ID      string
	Type    string
	Version int
	Err     error // names the first thing wrong
}

func (e *DecodeError) Error() string { return e.Err.Error() }
func (e *DecodeError) Unwrap() error { return e.Err }

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
