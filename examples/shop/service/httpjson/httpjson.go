// Package httpjson is the shop services' small JSON-over-HTTP layer:
// routing with JSON errors (Serve), decoding a request body strictly
// (Decode) and writing JSON answers and errors (Write, Fail, FailErr,
// Respond).
//
// Every answer a handler behind Serve gives is JSON; errors are
// {"error": "…"}, with "field" when one field of the request is at fault:
//
//   - a path no route serves: 404; a route without the request's method:
//     405 with an Allow header;
//   - a POST, PUT or PATCH whose Content-Type is not application/json
//     (parameters allowed, charset only utf-8): 415;
//   - a body over MaxBody: 413; invalid JSON, unknown fields, a second value
//     or trailing data after the value: 400 (Decode);
//   - a panic in a handler: 500, logged with log/slog.
//
// Some answers cannot be JSON because net/http gives them before any
// handler runs, in plain text: a malformed request line, header or URL, or
// an HTTP/1.1 request without Host (400), a header block over the server's
// MaxHeaderBytes (431), an unsupported HTTP version (505) or
// Transfer-Encoding (501); an Expect other than 100-continue gets 417 with
// no body. A request that does not arrive within the server's timeouts
// gets no answer at all. ServeMux's redirects (of unclean paths, or adding
// a trailing slash) are not errors and keep their small HTML body. And a
// panic after a handler started writing its answer cannot become a 500:
// the connection is aborted instead.
package httpjson

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"runtime/debug"
	"strings"
)

// MaxBody bounds a request body.
const MaxBody = 1 << 20

// MediaType is the one media type request bodies may have.
const MediaType = "application/json"

// Error is the JSON body of every error answer.
type Error struct {
	Error string `json:"error"`
	// Field names the request field at fault, when there is one.
	Field string `json:"field,omitempty"`
}

// StatusError is an error answered with its own HTTP status.
type StatusError struct {
	Status int
	Err    error
}

func (e *StatusError) Error() string { return e.Err.Error() }
func (e *StatusError) Unwrap() error { return e.Err }

// FieldError says which field of a request is wrong and why; FailErr puts
// the field in the answer's "field".
type FieldError struct {
	Field string
	Err   error
}

func (e *FieldError) Error() string { return e.Field + " " + e.Err.Error() }
func (e *FieldError) Unwrap() error { return e.Err }

// CheckContentType returns a 415 *StatusError unless r says its body is
// application/json (in any case, with parameters, a charset only of utf-8).
func CheckContentType(r *http.Request) error {
	unsupported := func(format string, a ...any) error {
		return &StatusError{Status: http.StatusUnsupportedMediaType, Err: fmt.Errorf(format, a...)}
	}
	cts := r.Header.Values("Content-Type")
	switch {
	case len(cts) == 0:
		return unsupported("missing Content-Type: send Content-Type %q", MediaType)
	case len(cts) > 1:
		return unsupported("%d Content-Type headers %q: send one, %q", len(cts), cts, MediaType)
	}
	mt, params, err := mime.ParseMediaType(cts[0])
	if err != nil {
		return unsupported("Content-Type %q cannot be parsed (%v): send %q", cts[0], err, MediaType)
	}
	if mt != MediaType {
		return unsupported("Content-Type %q is not supported: send %q", cts[0], MediaType)
	}
	if cs, ok := params["charset"]; ok && !strings.EqualFold(cs, "utf-8") {
		return unsupported("Content-Type %q: charset %q is not supported: JSON is utf-8", cts[0], cs)
	}
	return nil
}

// Decode reads one JSON object from r's body into v, refusing a
// Content-Type other than application/json (415), bodies over MaxBody
// (413), unknown fields, invalid JSON and trailing data (400). Its errors
// are *StatusError: answer them with FailErr.
func Decode(w http.ResponseWriter, r *http.Request, v any) error {
	if err := CheckContentType(r); err != nil {
		return err
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, MaxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return bodyError(err, "invalid JSON body: %w", err)
	}
	if err := dec.Decode(&struct{}{}); !errors.Is(err, io.EOF) {
		return bodyError(err, "invalid JSON body: more than one JSON value")
	}
	return nil
}

// bodyError is a 413 when err says the body is over its limit, else a 400
// of format and a.
func bodyError(err error, format string, a ...any) error {
	if tooBig, ok := errors.AsType[*http.MaxBytesError](err); ok {
		return &StatusError{Status: http.StatusRequestEntityTooLarge, Err: fmt.Errorf("request body is larger than %d bytes", tooBig.Limit)}
	}
	return &StatusError{Status: http.StatusBadRequest, Err: fmt.Errorf(format, a...)}
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

// FailErr answers with {"error": err} and the status of the *StatusError
// err wraps, or else of the first mapping err wraps, or else 500; a
// *FieldError in err names its field in "field".
func FailErr(w http.ResponseWriter, err error, mappings ...As) {
	status := http.StatusInternalServerError
	if se, ok := errors.AsType[*StatusError](err); ok {
		status = se.Status
	} else {
		for _, m := range mappings {
			if errors.Is(err, m.Err) {
				status = m.Status
				break
			}
		}
	}
	body := Error{Error: err.Error()}
	if fe, ok := errors.AsType[*FieldError](err); ok {
		body.Field = fe.Field
	}
	Write(w, status, body)
}

// Respond answers with ok and v when err is nil, or else as FailErr does.
func Respond(w http.ResponseWriter, ok int, v any, err error, mappings ...As) {
	if err == nil {
		Write(w, ok, v)
		return
	}
	FailErr(w, err, mappings...)
}

// Serve serves mux with every error in JSON: a path mux has no route for
// gets 404, a method its routes of the path do not take 405 (with mux's
// Allow header), a POST, PUT or PATCH that is not application/json 415; the
// body is limited to MaxBody; a panic is logged to log (slog.Default() when
// nil) and answered 500 if the handler had not started its answer yet.
func Serve(mux *http.ServeMux, log *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tw := &tracked{ResponseWriter: w}
		defer recoverPanic(tw, r, log)
		if h, pattern := mux.Handler(r); pattern == "" {
			unrouted(tw, r, h)
			return
		}
		switch r.Method {
		case http.MethodPost, http.MethodPut, http.MethodPatch:
			if err := CheckContentType(r); err != nil {
				FailErr(tw, err)
				return
			}
		}
		// Limited against the server's own writer, so that a body over the
		// limit also closes the connection instead of being read to the end.
		r.Body = http.MaxBytesReader(w, r.Body, MaxBody)
		mux.ServeHTTP(tw, r)
	})
}

// unrouted answers a request mux found no route for: h is mux's own answer
// (404, or 405 with Allow), which this turns into JSON.
func unrouted(w http.ResponseWriter, r *http.Request, h http.Handler) {
	c := &capture{header: http.Header{}}
	h.ServeHTTP(c, r)
	switch c.status {
	case http.StatusMethodNotAllowed:
		allow := c.header.Get("Allow")
		w.Header().Set("Allow", allow)
		Fail(w, http.StatusMethodNotAllowed, fmt.Sprintf("method %s is not allowed on %s (allowed: %s)", r.Method, r.URL.Path, allow))
	default:
		Fail(w, http.StatusNotFound, fmt.Sprintf("no such resource: %s %s", r.Method, r.URL.Path))
	}
}

// capture keeps the status and headers a handler answers with.
type capture struct {
	header http.Header
	status int
}

func (c *capture) Header() http.Header { return c.header }
func (c *capture) Write(b []byte) (int, error) {
	c.WriteHeader(http.StatusOK)
	return len(b), nil
}
func (c *capture) WriteHeader(status int) {
	if c.status == 0 {
		c.status = status
	}
}

// tracked records whether a handler has begun its answer.
type tracked struct {
	http.ResponseWriter
	started bool
}

func (t *tracked) WriteHeader(status int) {
	if status >= 200 {
		t.started = true
	}
	t.ResponseWriter.WriteHeader(status)
}

func (t *tracked) Write(b []byte) (int, error) {
	t.started = true
	return t.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the server's writer.
func (t *tracked) Unwrap() http.ResponseWriter { return t.ResponseWriter }

// recoverPanic, deferred, logs a handler's panic and answers 500, or aborts
// the connection when the answer had begun. http.ErrAbortHandler passes.
func recoverPanic(w *tracked, r *http.Request, log *slog.Logger) {
	p := recover()
	if p == nil {
		return
	}
	if p == http.ErrAbortHandler { // net/http compares it by identity too
		panic(p)
	}
	if log == nil {
		log = slog.Default()
	}
	log.ErrorContext(r.Context(), "http handler panicked", "method", r.Method, "path", r.URL.Path,
		"panic", fmt.Sprint(p), "answered", w.started, "stack", string(debug.Stack()))
	if w.started {
		panic(http.ErrAbortHandler)
	}
	clear(w.Header())
	Fail(w, http.StatusInternalServerError, "internal error")
}
