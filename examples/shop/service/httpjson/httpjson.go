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

// As maps errors that wrap Err to an HTTP status in Respond.
type As struct {
	Err    error
	Status int
}

// Respond answers with ok and v when err is nil, with the status of the
// first mapping err wraps, or else with 500; errors go out as {"error": …}.
func Respond(w http.ResponseWriter, ok int, v any, err error, mappings ...As) {
	if err == nil {
		Write(w, ok, v)
		return
	}
	for _, m := range mappings {
		if errors.Is(err, m.Err) {
			Fail(w, m.Status, err.Error())
			return
		}
	}
	Fail(w, http.StatusInternalServerError, err.Error())
}
