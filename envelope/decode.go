package envelope

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"iter"
	"strconv"
	"strings"
)

// Media types of the CloudEvents structured and batch content modes.
const (
	MediaTypeStructured = "application/cloudevents+json"
	MediaTypeBatch      = "application/cloudevents-batch+json"
)

// Read is what Decode learnt about a message besides its envelope.
type Read struct {
	// Structured: the message was in structured content mode (a JSON
	// CloudEvent as the body), else binary mode.
	Structured bool
	// Foreign: the event does not carry ce-heraldkind, which every herald
	// service writes, so it comes from a producer that is not one (a
	// CloudEvents SDK in another language, say). Its data is not trusted
	// to match the contract: a consumer checks it against the contract's
	// JSON Schema before a handler sees it.
	Foreign bool
}

// Decode reads one message of a subscription to events of kind kind, as a
// herald service or any other CloudEvents 1.0 producer on NATS sends it:
//
//   - Structured mode when content-type is application/cloudevents+json
//     (or application/cloudevents), or when the message has neither
//     ce-specversion nor content-type and its body is a JSON object (what
//     the Go SDK's NATS bindings send): the body is a JSON-format
//     CloudEvent, its data in "data" or "data_base64". The batch format
//     (application/cloudevents-batch+json) and other event formats are
//     refused, saying so.
//   - Binary mode otherwise, as FromBinary reads it, except that herald's
//     extensions may be missing.
//
// Without ce-heraldkind (heraldkind) the event is of kind; without
// ce-heraldversion (heraldversion) its version is the one its dataschema
// names (SchemaVersion), else 1. time is required, though CloudEvents
// leaves it optional. An error wraps ErrInvalid and is a *DecodeError
// naming the id, type and version that could be read.
func Decode(headers iter.Seq2[string, string], body []byte, kind Kind) (*Envelope, Read, error) {
	a := new(attributes)
	for k, v := range headers {
		a.add(k, v)
	}
	m := readMode{kind: kind, versionRule: true}
	ct := a.vals[aContentType]
	if a.conflict.has(aContentType) && !a.exact.has(aContentType) {
		// Which of them would pick the content mode depends on the order
		// the headers came in: envelope refuses the conflict, naming the
		// id and type.
	} else if a.has(aContentType) {
		mt := mediaType(decodeHeaderValue(ct))
		switch {
		case mt == MediaTypeBatch:
			return nil, Read{Structured: true}, &DecodeError{Err: fmt.Errorf("%w: content-type %s: the batch content mode is not supported; send each event as its own message", ErrInvalid, MediaTypeBatch)}
		case mt == MediaTypeStructured || mt == "application/cloudevents":
			e, foreign, err := fromStructured(body, m)
			return e, Read{Structured: true, Foreign: foreign}, err
		case strings.HasPrefix(mt, "application/cloudevents"):
			return nil, Read{Structured: true}, &DecodeError{Err: fmt.Errorf("%w: content-type %s: structured mode in an event format other than JSON (%s) is not supported", ErrInvalid, mt, MediaTypeStructured)}
		}
	} else if !a.has(aSpecVersion) && looksLikeObject(body) {
		e, foreign, err := fromStructured(body, m)
		return e, Read{Structured: true, Foreign: foreign}, err
	}
	e, err := a.envelope(body, m)
	return e, Read{Foreign: a.vals[aKind] == ""}, err // decoded by envelope
}

// mediaType is the media type of a content-type value, in lower case,
// without parameters.
func mediaType(ct string) string {
	mt, _, _ := strings.Cut(ct, ";")
	return strings.ToLower(strings.TrimSpace(mt))
}

// looksLikeObject reports whether body starts, after white space, with '{'.
func looksLikeObject(body []byte) bool {
	b := bytes.TrimLeft(body, " \t\r\n")
	return len(b) > 0 && b[0] == '{'
}

// SchemaVersion returns the contract version a dataschema URI names: its
// last segment after '/', ':' or '.' is v<N>, optionally followed by
// ".json" — as in https://example.com/schemas/shop.order.confirmed/v2,
// urn:shop:order.confirmed:v2 or shop.order.confirmed.v2.json. N is a
// decimal integer >= 1 without leading zeros. False when it names none.
func SchemaVersion(dataschema string) (int, bool) {
	s := strings.TrimSuffix(dataschema, ".json")
	i := strings.LastIndexAny(s, "/:.")
	if i < 0 {
		return 0, false
	}
	seg := s[i+1:]
	if len(seg) < 2 || len(seg) > 10 || (seg[0] != 'v' && seg[0] != 'V') || seg[1] == '0' {
		return 0, false
	}
	for _, c := range []byte(seg[1:]) {
		if c < '0' || c > '9' {
			return 0, false
		}
	}
	n, err := strconv.Atoi(seg[1:])
	if err != nil || n < 1 || n > 1<<31-1 {
		return 0, false
	}
	return n, true
}

// structuredAttrs maps the members of a JSON-format CloudEvent that herald
// keeps onto its attributes.
var structuredAttrs = map[string]int{
	"specversion":     aSpecVersion,
	"id":              aID,
	"source":          aSource,
	"type":            aType,
	"time":            aTime,
	"heraldversion":   aVersion,
	"heraldkind":      aKind,
	"partitionkey":    aPartitionKey,
	"correlationid":   aCorrelationID,
	"causationid":     aCausationID,
	"traceparent":     aTraceParent,
	"tracestate":      aTraceState,
	"datacontenttype": aDataContentType,
	"dataschema":      aDataSchema,
}

// structuredNames names the members of structuredAttrs by attribute.
var structuredNames = func() (names [numAttributes]string) {
	names[aContentType] = "content-type"
	for name, i := range structuredAttrs {
		names[i] = name
	}
	return names
}()

// fromStructured reads a JSON-format CloudEvent (structured content mode);
// foreign: it has no heraldkind.
func fromStructured(body []byte, m readMode) (_ *Envelope, foreign bool, _ error) {
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(body, &doc); err != nil {
		return nil, false, &DecodeError{Err: fmt.Errorf("%w: structured mode: the body is not a JSON object: %v", ErrInvalid, err)}
	}
	a := &attributes{decoded: true, structured: true}
	var errs []error
	for name, raw := range doc {
		i, ok := structuredAttrs[name]
		if !ok {
			continue
		}
		v, present, err := attributeValue(raw)
		if err != nil {
			errs = append(errs, fmt.Errorf("%w: structured mode: member %q: %v", ErrInvalid, name, err))
			continue
		}
		if present {
			a.set(i, v)
		}
	}
	if len(errs) > 0 {
		// the first in a fixed order, so the same body gives the same error
		first := errs[0]
		for _, err := range errs[1:] {
			if err.Error() < first.Error() {
				first = err
			}
		}
		return nil, false, a.fail(m, first)
	}
	if !a.has(aSpecVersion) {
		return nil, false, a.fail(m, fmt.Errorf("%w: structured mode: no member \"specversion\"", ErrInvalid))
	}
	data, err := structuredData(doc, a.vals[aDataContentType])
	if err != nil {
		return nil, false, a.fail(m, err)
	}
	e, err := a.envelope(data, m)
	return e, err == nil && a.vals[aKind] == "", err
}

// attributeValue is the canonical string of a context attribute's JSON
// value: a string as it is, a number or boolean (an extension of type
// Integer or Boolean) as written; null means absent.
func attributeValue(raw json.RawMessage) (v string, present bool, err error) {
	raw = bytes.TrimSpace(raw)
	switch {
	case len(raw) == 0 || string(raw) == "null":
		return "", false, nil
	case raw[0] == '"':
		if err := json.Unmarshal(raw, &v); err != nil {
			return "", false, err
		}
		return v, true, nil
	case string(raw) == "true" || string(raw) == "false":
		return string(raw), true, nil
	case raw[0] == '-' || '0' <= raw[0] && raw[0] <= '9':
		var n json.Number
		if err := json.Unmarshal(raw, &n); err != nil {
			return "", false, err
		}
		return n.String(), true, nil
	}
	return "", false, fmt.Errorf("want a string, number or boolean, got %.20s", raw)
}

// structuredData is the event data of a JSON-format CloudEvent: data_base64
// decoded; data as JSON text when datacontenttype is JSON (or absent),
// else a JSON string's contents (or the JSON text of any other value).
func structuredData(doc map[string]json.RawMessage, contentType string) ([]byte, error) {
	raw, hasData := doc["data"]
	b64, hasB64 := doc["data_base64"]
	hasData = hasData && string(bytes.TrimSpace(raw)) != "null"
	hasB64 = hasB64 && string(bytes.TrimSpace(b64)) != "null"
	switch {
	case hasData && hasB64:
		return nil, fmt.Errorf("%w: structured mode: both \"data\" and \"data_base64\"", ErrInvalid)
	case hasB64:
		var s string
		if err := json.Unmarshal(b64, &s); err != nil {
			return nil, fmt.Errorf("%w: structured mode: member \"data_base64\" is not a string", ErrInvalid)
		}
		data, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			return nil, fmt.Errorf("%w: structured mode: member \"data_base64\": %v", ErrInvalid, err)
		}
		return data, nil
	case !hasData:
		return []byte{}, nil
	}
	raw = bytes.TrimSpace(raw)
	if !isJSONMediaType(contentType) && raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, fmt.Errorf("%w: structured mode: member \"data\": %v", ErrInvalid, err)
		}
		return []byte(s), nil
	}
	return raw, nil
}

// isJSONMediaType reports whether datacontenttype ct says JSON: absent,
// application/json, text/json or a +json suffix.
func isJSONMediaType(ct string) bool {
	mt := mediaType(ct)
	return mt == "" || mt == "application/json" || mt == "text/json" || strings.HasSuffix(mt, "+json")
}
