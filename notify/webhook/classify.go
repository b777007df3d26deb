package webhook

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/heraldhq/herald/notify"
)

// MaxBody is how much of a response body Do keeps (for error messages and
// for the callers that parse it); the rest is drained and dropped.
const MaxBody = 64 << 10

// StatusError is a non-2xx answer of an HTTP endpoint. Classify wraps it
// with the pipeline's sentinels.
type StatusError struct {
	// Code is the HTTP status code.
	Code int
	// Body is the start of the response body, for logs.
	Body string
}

// Error returns the status and the start of the body.
func (e *StatusError) Error() string {
	if e.Body == "" {
		return fmt.Sprintf("HTTP %d %s", e.Code, http.StatusText(e.Code))
	}
	return fmt.Sprintf("HTTP %d %s: %q", e.Code, http.StatusText(e.Code), e.Body)
}

// Response is what Do read of an HTTP response.
type Response struct {
	Status int
	Header http.Header
	// Body is at most MaxBody bytes of the body.
	Body []byte
}

// Do sends req with client, reads at most MaxBody bytes of the answer, and
// classifies the outcome with Classify. A transport failure is returned
// wrapped as is: retryable (a refused connection, a timeout, the context's
// error) unless the guard refused the destination (notify.ErrRefused).
func Do(client *http.Client, req *http.Request, maxRetryAfter time.Duration) (Response, error) {
	resp, err := client.Do(req)
	if err != nil {
		// url.Error names the URL, and a chat or webhook URL can be a
		// secret (its path is the credential): keep only the cause.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return Response{}, fmt.Errorf("%s to %s: %w", req.Method, req.URL.Host, err)
	}
	defer resp.Body.Close()
	// The status line is the answer; the body is a courtesy, so a failure
	// to read it does not change the outcome.
	body, _ := io.ReadAll(io.LimitReader(resp.Body, MaxBody))
	// Drain a little more so the connection can be reused; give up on
	// bodies far larger than an acknowledgement.
	_, _ = io.CopyN(io.Discard, resp.Body, 4*MaxBody)
	r := Response{Status: resp.StatusCode, Header: resp.Header, Body: body}
	return r, Classify(resp.StatusCode, resp.Header, body, maxRetryAfter, time.Now())
}

// Classify maps an HTTP answer to the pipeline's error classes:
//
//	2xx                       nil
//	410 Gone                  notify.ErrGone (the endpoint is disabled)
//	408, 429, 5xx             *notify.RetryAfterError when Retry-After is
//	                          valid (capped at maxRetryAfter when that is
//	                          positive), else a plain retryable error
//	other 4xx, 1xx, 3xx       notify.ErrPermanent
//
// Every error wraps a *StatusError. now is the reference for a Retry-After
// HTTP date.
func Classify(code int, header http.Header, body []byte, maxRetryAfter time.Duration, now time.Time) error {
	if code >= 200 && code < 300 {
		return nil
	}
	se := &StatusError{Code: code, Body: snippet(body)}
	switch {
	case code == http.StatusGone:
		return fmt.Errorf("%w: %w", notify.ErrGone, se)
	case code == http.StatusTooManyRequests || code == http.StatusRequestTimeout || code >= 500:
		if d, ok := ParseRetryAfter(header.Get("Retry-After"), now); ok {
			if maxRetryAfter > 0 && d > maxRetryAfter {
				d = maxRetryAfter
			}
			return &notify.RetryAfterError{After: d, Err: se}
		}
		return se
	default:
		return fmt.Errorf("%w: %w", notify.ErrPermanent, se)
	}
}

// ParseRetryAfter parses a Retry-After value, delay-seconds or an HTTP
// date, into a non-negative duration from now. ok is false when v is empty
// or invalid.
func ParseRetryAfter(v string, now time.Time) (d time.Duration, ok bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n < 0 {
			return 0, false
		}
		const maxSeconds = int64((1<<63 - 1) / int64(time.Second))
		return time.Duration(min(n, maxSeconds)) * time.Second, true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	return max(t.Sub(now), 0), true
}

// IsRetryable reports whether the pipeline would retry err: it is not nil
// and does not wrap notify.ErrPermanent.
func IsRetryable(err error) bool {
	return err != nil && !errors.Is(err, notify.ErrPermanent)
}

func snippet(b []byte) string {
	const n = 256
	cut := len(b) > n
	if cut {
		b = b[:n]
	}
	s := strings.TrimSpace(strings.ToValidUTF8(string(b), ""))
	if cut {
		s += "…"
	}
	return s
}
