package httpjson_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"github.com/heraldhq/herald/internal/testlog"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/heraldhq/herald/examples/shop/service/httpjson"
)

type thing struct {
	Name string `json:"name"`
}

// server serves a small API behind httpjson.Serve, logging to the buffer.
func server(t *testing.T) (*httptest.Server, *testlog.Buffer) {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("POST /things", func(w http.ResponseWriter, r *http.Request) {
		var v thing
		if err := httpjson.Decode(w, r, &v); err != nil {
			httpjson.FailErr(w, err)
			return
		}
		httpjson.Write(w, http.StatusCreated, v)
	})
	mux.HandleFunc("GET /things/{id}", func(w http.ResponseWriter, r *http.Request) {
		httpjson.Write(w, http.StatusOK, thing{Name: r.PathValue("id")})
	})
	// PUT reads no body through Decode: Serve alone checks its Content-Type.
	mux.HandleFunc("PUT /things/{id}", func(w http.ResponseWriter, r *http.Request) {
		httpjson.Write(w, http.StatusOK, thing{Name: r.PathValue("id")})
	})
	mux.HandleFunc("GET /panic", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Half-Done", "yes")
		panic("boom in the handler")
	})
	mux.HandleFunc("GET /panic-late", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
		_, _ = io.WriteString(w, `{"partial":`)
		http.NewResponseController(w).Flush()
		panic("boom after the answer began")
	})
	var logs testlog.Buffer
	srv := httptest.NewServer(httpjson.Serve(mux, slog.New(slog.NewTextHandler(&logs, nil))))
	t.Cleanup(srv.Close)
	return srv, &logs
}

const noContentType = "-"

func TestServeAnswersEveryErrorInJSON(t *testing.T) {
	srv, _ := server(t)
	big := `{"name":"` + strings.Repeat("x", httpjson.MaxBody) + `"}`
	cases := []struct {
		name, method, path string
		contentType        []string // noContentType: none
		body               string
		status             int
		text               string // in the error
		allow              string
	}{
		{"valid", "POST", "/things", []string{"application/json"}, `{"name":"a"}`, 201, "", ""},
		{"charset utf-8", "POST", "/things", []string{"application/json; charset=utf-8"}, `{"name":"a"}`, 201, "", ""},
		{"media type in any case", "POST", "/things", []string{"Application/JSON; Charset=UTF-8"}, `{"name":"a"}`, 201, "", ""},
		{"text/plain", "POST", "/things", []string{"text/plain"}, `{"name":"a"}`, 415, `Content-Type "text/plain" is not supported: send "application/json"`, ""},
		{"text/plain with charset", "POST", "/things", []string{"text/plain; charset=utf-8"}, `{"name":"a"}`, 415, `"text/plain; charset=utf-8" is not supported`, ""},
		{"form", "POST", "/things", []string{"application/x-www-form-urlencoded"}, `name=a`, 415, `"application/x-www-form-urlencoded" is not supported`, ""},
		{"prefix of json", "POST", "/things", []string{"application/jsonx"}, `{"name":"a"}`, 415, "not supported", ""},
		{"missing", "POST", "/things", []string{noContentType}, `{"name":"a"}`, 415, `missing Content-Type: send Content-Type "application/json"`, ""},
		{"missing, empty body", "POST", "/things", []string{noContentType}, ``, 415, "missing Content-Type", ""},
		{"empty", "POST", "/things", []string{""}, `{"name":"a"}`, 415, "cannot be parsed", ""},
		{"unparsable", "POST", "/things", []string{"application/json; =x"}, `{"name":"a"}`, 415, "cannot be parsed", ""},
		{"latin-1", "POST", "/things", []string{"application/json; charset=latin1"}, `{"name":"a"}`, 415, `charset "latin1" is not supported`, ""},
		{"two headers", "POST", "/things", []string{"application/json", "text/plain"}, `{"name":"a"}`, 415, "2 Content-Type headers", ""},
		{"PUT checked by Serve", "PUT", "/things/1", []string{"text/plain"}, `x`, 415, `"text/plain" is not supported`, ""},
		{"PUT valid", "PUT", "/things/1", []string{"application/json"}, `{}`, 200, "", ""},
		{"invalid JSON", "POST", "/things", []string{"application/json"}, `{"name":`, 400, "invalid JSON body", ""},
		{"not an object", "POST", "/things", []string{"application/json"}, `[1]`, 400, "invalid JSON body", ""},
		{"unknown field", "POST", "/things", []string{"application/json"}, `{"name":"a","admin":true}`, 400, `unknown field "admin"`, ""},
		{"trailing data", "POST", "/things", []string{"application/json"}, `{"name":"a"} trailing`, 400, "more than one JSON value", ""},
		{"two values", "POST", "/things", []string{"application/json"}, `{"name":"a"}{"name":"b"}`, 400, "more than one JSON value", ""},
		{"empty body", "POST", "/things", []string{"application/json"}, ``, 400, "invalid JSON body: EOF", ""},
		{"too large", "POST", "/things", []string{"application/json"}, big, 413, fmt.Sprintf("request body is larger than %d bytes", httpjson.MaxBody), ""},
		{"too large after the value", "POST", "/things", []string{"application/json"}, `{"name":"a"}` + strings.Repeat(" ", httpjson.MaxBody), 413, "request body is larger than", ""},
		{"unknown path", "GET", "/nope", nil, ``, 404, "no such resource: GET /nope", ""},
		{"unknown path, POST", "POST", "/nope", []string{"text/plain"}, `x`, 404, "no such resource: POST /nope", ""},
		{"wrong method", "GET", "/things", nil, ``, 405, "method GET is not allowed on /things (allowed: POST)", "POST"},
		{"wrong method, JSON body", "DELETE", "/things/1", []string{"application/json"}, `{}`, 405, "method DELETE is not allowed", "GET, HEAD, PUT"},
		{"wrong method before media type", "PATCH", "/things/1", []string{"text/plain"}, `x`, 405, "method PATCH is not allowed", "GET, HEAD, PUT"},
		{"panic", "GET", "/panic", nil, ``, 500, "internal error", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			req, err := http.NewRequest(c.method, srv.URL+c.path, strings.NewReader(c.body))
			if err != nil {
				t.Fatal(err)
			}
			for _, ct := range c.contentType {
				if ct != noContentType {
					req.Header.Add("Content-Type", ct)
				}
			}
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			raw, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != c.status {
				t.Fatalf("status %d, want %d; body %s", resp.StatusCode, c.status, raw)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Fatalf("answer's Content-Type %q, want application/json; body %s", ct, raw)
			}
			var body map[string]any
			if err := json.Unmarshal(raw, &body); err != nil {
				t.Fatalf("answer is not JSON: %v: %s", err, raw)
			}
			msg, isErr := body["error"].(string)
			switch {
			case c.text == "" && isErr:
				t.Fatalf("unexpected error %q", msg)
			case c.text != "" && !strings.Contains(msg, c.text):
				t.Fatalf("error %q, want it to contain %q", msg, c.text)
			}
			if got := resp.Header.Get("Allow"); got != c.allow {
				t.Fatalf("Allow %q, want %q", got, c.allow)
			}
		})
	}
}

func TestServeRecoversPanicsAndLogsThem(t *testing.T) {
	srv, logs := server(t)
	resp, err := srv.Client().Get(srv.URL + "/panic")
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var body httpjson.Error
	if resp.StatusCode != http.StatusInternalServerError || json.Unmarshal(raw, &body) != nil || body.Error != "internal error" {
		t.Fatalf("panic answered %d %s, want 500 {\"error\":\"internal error\"}", resp.StatusCode, raw)
	}
	if strings.Contains(string(raw), "boom") {
		t.Fatalf("the answer shows the panic: %s", raw)
	}
	if resp.Header.Get("X-Half-Done") != "" {
		t.Fatal("headers the handler set before it panicked went out with the 500")
	}
	log := logs.String()
	for _, want := range []string{"level=ERROR", "http handler panicked", "path=/panic", `panic="boom in the handler"`, "answered=false", "stack="} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
	// The server still serves after the panic.
	resp, err = srv.Client().Get(srv.URL + "/things/x")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("after a panic: %v %v", resp, err)
	}
	resp.Body.Close()
}

func TestServeAbortsAPanicAfterTheAnswerBegan(t *testing.T) {
	srv, logs := server(t)
	resp, err := srv.Client().Get(srv.URL + "/panic-late")
	if err == nil {
		raw, rerr := io.ReadAll(resp.Body)
		resp.Body.Close()
		if rerr == nil {
			t.Fatalf("a panic after the answer began ended as a complete answer: %d %s", resp.StatusCode, raw)
		}
	}
	log := logs.String()
	if !strings.Contains(log, "boom after the answer began") || !strings.Contains(log, "answered=true") {
		t.Fatalf("log:\n%s", log)
	}
}

func TestFailErr(t *testing.T) {
	errBad := errors.New("bad")
	cases := []struct {
		name   string
		err    error
		status int
		field  string
	}{
		{"status error wins over a mapping", fmt.Errorf("%w: %w", errBad, &httpjson.StatusError{Status: 415, Err: errors.New("x")}), 415, ""},
		{"mapping", fmt.Errorf("wrapped: %w", errBad), 400, ""},
		{"field", fmt.Errorf("%w: %w", errBad, &httpjson.FieldError{Field: "email", Err: errors.New("is required")}), 400, "email"},
		{"unmapped", errors.New("disk on fire"), 500, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			httpjson.FailErr(rec, c.err, httpjson.As{Err: errBad, Status: 400})
			var body httpjson.Error
			if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
				t.Fatal(err)
			}
			if rec.Code != c.status || body.Error != c.err.Error() || body.Field != c.field {
				t.Fatalf("got %d %+v, want %d field %q error %q", rec.Code, body, c.status, c.field, c.err)
			}
		})
	}
}
