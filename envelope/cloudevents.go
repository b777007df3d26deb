package envelope

import (
	"fmt"
	"strconv"
	"strings"
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
// make herald keep megabytes of header text.
const maxHeaderValue = 4096

// ToBinary maps e onto CloudEvents 1.0 binary content mode: attributes in
// headers, Data as the body. Optional attributes that are empty are omitted.
func ToBinary(e *Envelope) (map[string]string, []byte) {
	h := make(map[string]string, 13)
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
// fails with an error wrapping ErrInvalid that names the first bad attribute.
// Header keys are matched case-insensitively.
func FromBinary(header map[string]string, body []byte) (*Envelope, error) {
	get := func(k string) string {
		if v, ok := header[k]; ok {
			return v
		}
		for hk, v := range header {
			if strings.EqualFold(hk, k) {
				return v
			}
		}
		return ""
	}
	for _, k := range []string{HeaderSpecVersion, HeaderID, HeaderSource, HeaderType, HeaderTime, HeaderVersion, HeaderKind,
		HeaderContentType, HeaderPartitionKey, HeaderCorrelationID, HeaderCausationID, HeaderTraceParent, HeaderTraceState} {
		if len(get(k)) > maxHeaderValue {
			return nil, fmt.Errorf("%w: header %s longer than %d bytes", ErrInvalid, k, maxHeaderValue)
		}
	}
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
