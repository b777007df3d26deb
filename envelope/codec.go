package envelope

import (
	"encoding/json"
	"fmt"
)

// Codec encodes event payloads. ContentType is recorded in every envelope so
// a consumer picks the matching codec. Implementations must be safe for
// concurrent use.
type Codec interface {
	// ContentType is the media type of the encoded data, recorded as the
	// envelope's DataContentType (e.g. "application/json").
	ContentType() string
	// Marshal encodes v.
	Marshal(v any) ([]byte, error)
	// Unmarshal decodes data into v, which must be a non-nil pointer.
	Unmarshal(data []byte, v any) error
}

// JSON is the default codec (encoding/json, content type application/json).
var JSON Codec = jsonCodec{}

type jsonCodec struct{}

func (jsonCodec) ContentType() string           { return "application/json" }
func (jsonCodec) Marshal(v any) ([]byte, error) { return json.Marshal(v) }
func (jsonCodec) Unmarshal(data []byte, v any) error {
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("decode %s: %w", "application/json", err)
	}
	return nil
}
