// Package httpjson is the shop services' small JSON-over-HTTP layer:
// decoding a request body strictly and writing JSON answers and errors.
package httpjson

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
)

// MaxBody bounds a request body.
const MaxBody = 1 << 20

// Error is the JSON body of every error answer.
type Error struct {
	Error string `json:"error"`
}

// Decode reads one JSON object from r's body into v, refusing unknown
// fields, trailing data and bodies over MaxBody.
func Decode(w http.ResponseWriter, r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, MaxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("invalid JSON body: %w", err)
	}
	if err := dec.Decode(&struct{}{}); !errors.Is(err, io.EOF) {
		return errors.New("invalid JSON body: more than one JSON value")
	}
	return nil
}

// Write answers with status and v as JSON.
func Write(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// Fail answers with status and {"error": msg}.
func Fail(w http.ResponseWriter, status int, msg string) {
	Write(w, status, Error{Error: msg})
}
