package envelope

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

type orderConfirmed struct {
	OrderID string            `json:"order_id"`
	Total   int64             `json:"total"`
	Tags    []string          `json:"tags,omitempty"`
	Meta    map[string]string `json:"meta,omitempty"`
}

func TestJSONCodec(t *testing.T) {
	if got := JSON.ContentType(); got != "application/json" {
		t.Errorf("ContentType() = %q, want application/json", got)
	}

	in := orderConfirmed{OrderID: "A-1", Total: 4200, Tags: []string{"gift", "ünïcödé"}, Meta: map[string]string{"b": "2", "a": "1"}}
	data, err := JSON.Marshal(in)
	if err != nil {
		t.Fatalf("Marshal: %v", err)
	}
	const want = `{"order_id":"A-1","total":4200,"tags":["gift","ünïcödé"],"meta":{"a":"1","b":"2"}}`
	if string(data) != want {
		t.Errorf("Marshal = %s, want %s", data, want)
	}
	var out orderConfirmed
	if err := JSON.Unmarshal(data, &out); err != nil {
		t.Fatalf("Unmarshal: %v", err)
	}
	if fmt.Sprint(out) != fmt.Sprint(in) {
		t.Errorf("Unmarshal = %+v, want %+v", out, in)
	}

	t.Run("unmarshal errors", func(t *testing.T) {
		for _, data := range []string{``, `{`, `{"total":"many"}`, `[1,2]`} {
			var out orderConfirmed
			err := JSON.Unmarshal([]byte(data), &out)
			if err == nil {
				t.Errorf("Unmarshal(%q) succeeded", data)
				continue
			}
			if !strings.Contains(err.Error(), "application/json") {
				t.Errorf("Unmarshal(%q) error %q does not name the content type", data, err)
			}
			var syn *json.SyntaxError
			var typ *json.UnmarshalTypeError
			if !errors.As(err, &syn) && !errors.As(err, &typ) && data != `` {
				t.Errorf("Unmarshal(%q) error %v does not wrap the encoding/json error", data, err)
			}
		}
	})

	t.Run("marshal error", func(t *testing.T) {
		if _, err := JSON.Marshal(make(chan int)); err == nil {
			t.Error("Marshal(chan) succeeded")
		}
	})
}

// lineCodec is a toy codec: a []string payload, one element a line.
type lineCodec struct{}

func (lineCodec) ContentType() string { return "text/x-lines; charset=utf-8" }

func (lineCodec) Marshal(v any) ([]byte, error) {
	lines, ok := v.([]string)
	if !ok {
		return nil, fmt.Errorf("lineCodec: cannot marshal %T", v)
	}
	return []byte(strings.Join(lines, "\n")), nil
}

func (lineCodec) Unmarshal(data []byte, v any) error {
	p, ok := v.(*[]string)
	if !ok {
		return fmt.Errorf("lineCodec: cannot unmarshal into %T", v)
	}
	*p = strings.Split(string(data), "\n")
	return nil
}

var _ Codec = lineCodec{}

func TestCustomCodec(t *testing.T) {
	codecs := map[string]Codec{}
	for _, c := range []Codec{JSON, lineCodec{}} {
		codecs[c.ContentType()] = c
	}

	var c Codec = lineCodec{}
	payload := []string{"first", "zweite Zeile", "third"}
	data, err := c.Marshal(payload)
	if err != nil {
		t.Fatal(err)
	}
	ts := time.Date(2024, 5, 17, 9, 30, 15, 0, time.UTC)
	e := &Envelope{
		ID:              NewID(ts),
		Type:            "notes.written",
		Version:         1,
		Kind:            KindNotification,
		Source:          "notes",
		Time:            ts,
		DataContentType: c.ContentType(),
		Data:            data,
	}

	h, body := ToBinary(e)
	// The space is percent-encoded on the wire, as the NATS binding says.
	if got, want := h[HeaderDataContentType], "text/x-lines;%20charset=utf-8"; got != want {
		t.Errorf("header %s = %q, want %q", HeaderDataContentType, got, want)
	}
	got, err := FromBinary(h, body)
	if err != nil {
		t.Fatal(err)
	}
	if got.DataContentType != c.ContentType() {
		t.Fatalf("DataContentType = %q, want %q", got.DataContentType, c.ContentType())
	}
	dec, ok := codecs[got.DataContentType]
	if !ok {
		t.Fatalf("no codec for %q", got.DataContentType)
	}
	var out []string
	if err := dec.Unmarshal(got.Data, &out); err != nil {
		t.Fatal(err)
	}
	if strings.Join(out, "|") != strings.Join(payload, "|") {
		t.Errorf("payload = %q, want %q", out, payload)
	}
	if !bytes.Equal(got.Data, data) {
		t.Errorf("Data = %q, want %q", got.Data, data)
	}
}
