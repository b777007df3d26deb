// Package notify is herald's notification tier: a notifier that consumes
// notification events and, for each recipient and channel, runs one
// pipeline — directory → preferences → suppression → idempotency → quiet
// hours → throttle → digest → template → send → delivery log — and the
// senders (channel providers) it delivers through.
//
// This file is the seam between the pipeline and the channels: a Sender
// delivers one rendered Message; the channel packages (notify/smtp,
// notify/webhook, notify/webpush, notify/chat, notify/sms, notify/devbox)
// implement it.
package notify

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/heraldhq/herald"
)

// Channels herald knows. A Sender serves exactly one.
const (
	Email   = "email"
	SMS     = "sms"
	Push    = "push"
	Chat    = "chat"
	Webhook = "webhook"
)

// Message is one rendered notification for one recipient on one channel.
type Message struct {
	// Key is the idempotency key (event id, recipient, channel). Senders pass
	// it to providers that accept one (the webhook-id header, the e-mail
	// Message-ID), so a provider or receiver can drop a resend.
	Key     string
	Channel string
	// To is the address on the channel: an e-mail address, an E.164 phone
	// number, a push subscription (JSON), a chat or webhook URL.
	To      string
	Subject string
	Text    string // the plain-text body; always set
	HTML    string // e-mail only, optional
	// Payload is the JSON body for channels that post structured data
	// (webhook); when empty they post {"text": Text}-style bodies.
	Payload []byte
	// Secret signs webhook payloads ("whsec_..."); a second, space-separated
	// secret signs too during a rotation.
	Secret string
	// EventID, EventType and CorrelationID tie the message to its event,
	// for logs and the delivery log.
	EventID       string
	EventType     string
	CorrelationID string
}

// Receipt is what a provider answered.
type Receipt struct {
	Provider   string // the Sender's Name
	ProviderID string // the provider's id for the message, when it gives one
	// Delivered is true when the provider confirmed delivery to the
	// recipient, not only acceptance (a webhook receiver's 2xx, say).
	Delivered bool
}

// Sender delivers messages of one channel through one provider.
type Sender interface {
	// Name identifies the provider in the delivery log, e.g. "smtp".
	Name() string
	// Channel is the channel the provider serves (Email, SMS, …).
	Channel() string
	// Send delivers m. Errors wrapping ErrPermanent (PermanentFailure) are
	// not retried (an invalid address, a refused request), nor are those
	// marked with herald.Permanent; ErrGone additionally marks the
	// address dead (a webhook's 410, a hard bounce); a *RetryAfterError says
	// how long the provider asked to wait; any other error is retried with
	// backoff.
	Send(ctx context.Context, m Message) (Receipt, error)
}

// Sentinel errors of delivery.
var (
	// ErrPermanent marks a failure that retrying cannot fix.
	ErrPermanent = errors.New("notify: permanent delivery failure")
	// ErrGone marks an address that no longer exists; it wraps ErrPermanent.
	ErrGone = fmt.Errorf("%w: address gone", ErrPermanent)
	// ErrRefused is returned by the SSRF guard for a destination it does
	// not allow; it wraps ErrPermanent.
	ErrRefused = fmt.Errorf("%w: destination refused", ErrPermanent)
)

// PermanentFailure wraps err so the pipeline does not retry the send: a
// Sender returns it for a message that can never be delivered (an invalid
// address, a refused request). (herald.Permanent is the other tier's: a
// handler error that dead-letters the event.)
func PermanentFailure(err error) error {
	if err == nil || errors.Is(err, ErrPermanent) {
		return err
	}
	return fmt.Errorf("%w: %w", ErrPermanent, err)
}

// isPermanent reports whether a send failed for good: the error wraps
// ErrPermanent, or the Sender marked it with herald.Permanent (the
// handlers' marker, which means the same here).
func isPermanent(err error) bool {
	return errors.Is(err, ErrPermanent) || herald.IsPermanent(err)
}

// RetryAfterError is a retryable failure for which the provider asked for a
// pause (HTTP 429 or 503 with Retry-After).
type RetryAfterError struct {
	After time.Duration
	Err   error
}

func (e *RetryAfterError) Error() string {
	return fmt.Sprintf("%v (retry after %v)", e.Err, e.After)
}

// Unwrap returns the underlying error.
func (e *RetryAfterError) Unwrap() error { return e.Err }
