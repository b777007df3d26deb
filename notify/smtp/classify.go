package smtp

import (
	"errors"
	"fmt"
	"strings"

	gomail "github.com/wneessen/go-mail"

	"github.com/heraldhq/herald/notify"
)

// ReplyError is an SMTP server's negative reply to a send.
type ReplyError struct {
	// Code is the reply code (550, 451, …).
	Code int
	// Enhanced is the RFC 3463 enhanced status code ("5.1.1"), when the
	// server sent one.
	Enhanced string
	// Stage is the command the server refused: "MAIL", "RCPT", "DATA".
	Stage string
	// Err is go-mail's error, with the server's text.
	Err error
}

// Error describes the refusal with the server's reply.
func (e *ReplyError) Error() string {
	return fmt.Sprintf("%s refused with %d %s: %v", e.Stage, e.Code, e.Enhanced, e.Err)
}

// Unwrap returns go-mail's error.
func (e *ReplyError) Unwrap() error { return e.Err }

// classify maps a send failure to the pipeline's error classes (see the
// package documentation).
func classify(err error) error {
	var se *gomail.SendError
	if !errors.As(err, &se) {
		return err // not a server reply: connection-level, retryable
	}
	code := se.ErrorCode()
	if code < 400 || code > 599 {
		return err
	}
	re := &ReplyError{Code: code, Enhanced: se.EnhancedStatusCode(), Stage: stage(se.Reason), Err: err}
	if code < 500 {
		return re
	}
	if (se.Reason == gomail.ErrSMTPRcptTo || se.Reason == gomail.ErrSMTPDataClose) && gone(code, re.Enhanced, err.Error()) {
		return fmt.Errorf("%w: %w", notify.ErrGone, re)
	}
	return fmt.Errorf("%w: %w", notify.ErrPermanent, re)
}

// gone reports whether a 5xx reply says the mailbox does not exist: an
// enhanced code for a bad destination mailbox or system, or — unless the
// enhanced code says policy (5.7.x) — a reply text saying so.
func gone(code int, enhanced, text string) bool {
	switch enhanced {
	case "5.1.1", "5.1.2", "5.1.6", "5.1.10":
		return true
	}
	if strings.HasPrefix(enhanced, "5.7.") {
		return false
	}
	if code != 550 && code != 551 && code != 553 {
		return false
	}
	text = strings.ToLower(text)
	for _, p := range []string{
		"user unknown", "unknown user", "no such user", "mailbox unavailable", "mailbox not found",
		"no such mailbox", "mailbox does not exist", "recipient not found", "unknown recipient",
		"address does not exist", "user not found", "invalid mailbox",
	} {
		if strings.Contains(text, p) {
			return true
		}
	}
	return false
}

// stale reports whether err shows a pooled session to be dead before
// anything of the message was sent: the first command got no reply, or 421
// (the server closing the session, as after its idle timeout).
func stale(err error) bool {
	var se *gomail.SendError
	if !errors.As(err, &se) {
		return false
	}
	return se.Reason == gomail.ErrConnCheck || (se.Reason == gomail.ErrSMTPMailFrom && (se.ErrorCode() == 0 || se.ErrorCode() == 421))
}

// reusable reports whether the session survives err: the server answered
// a MAIL, RCPT or end-of-DATA with a reply and the transaction was reset.
func reusable(err error) bool {
	var se *gomail.SendError
	if !errors.As(err, &se) || se.ErrorCode() == 0 {
		return false
	}
	switch se.Reason {
	case gomail.ErrSMTPMailFrom, gomail.ErrSMTPRcptTo, gomail.ErrSMTPDataClose:
		return true
	}
	return false
}

func stage(r gomail.SendErrReason) string {
	switch r {
	case gomail.ErrSMTPMailFrom:
		return "MAIL"
	case gomail.ErrSMTPRcptTo:
		return "RCPT"
	case gomail.ErrSMTPData, gomail.ErrSMTPDataClose, gomail.ErrWriteContent:
		return "DATA"
	case gomail.ErrSMTPReset:
		return "RSET"
	}
	return r.String()
}
