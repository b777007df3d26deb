// Package mailaddr checks the e-mail addresses the shop's HTTP APIs take in.
// They accept a bare address (an RFC 5322 addr-spec such as
// name@example.com) and nothing else: no display name, angle brackets,
// comments, quoting, group syntax, lists of addresses or whitespace, since
// each of those can smuggle a second recipient or a header into a message.
package mailaddr

import (
	"errors"
	"fmt"
	"net/mail"
	"strings"
	"unicode"
)

// Lengths from RFC 5321 §4.5.3.1, in bytes: a path holds at most 256
// octets including its angle brackets, so an address at most 254.
const (
	MaxLen      = 254
	MaxLocalLen = 64
)

// Check returns nil when s is exactly one bare e-mail address, taken as it
// is (nothing is trimmed). Its errors finish a sentence that names the field
// ("email " + err.Error()) and quote s only when it is short enough to show.
func Check(s string) error {
	switch {
	case s == "":
		return errors.New("is required")
	case len(s) > MaxLen:
		return fmt.Errorf("is %d bytes long, more than the %d an e-mail address may have", len(s), MaxLen)
	case strings.ContainsAny(s, "\r\n"):
		return fmt.Errorf("%q contains a line break", s)
	}
	odd := strings.ContainsFunc(s, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) })
	a, err := mail.ParseAddress(s)
	if err == nil && a.Name == "" && a.Address == s && !odd {
		if local := s[:strings.LastIndexByte(s, '@')]; len(local) > MaxLocalLen {
			return fmt.Errorf("%q has a local part of %d bytes, more than %d", s, len(local), MaxLocalLen)
		}
		return nil
	}
	// Say why, from what the input holds; ParseAddress, Name or the
	// difference of Address from s decided that it is wrong.
	why := "is not in the form name@domain"
	switch {
	case strings.ContainsAny(s, "<>"):
		why = "has angle brackets or a display name; send only the address inside them"
	case strings.Contains(s, ","):
		why = "lists several addresses; send one"
	case strings.Contains(s, ";") || err == nil && strings.Contains(s, ":"):
		why = "uses group syntax; send one bare address"
	case strings.ContainsAny(s, "()"):
		why = "has a comment; send only the address"
	case strings.Contains(s, `"`):
		why = "has a quoted local part; send a plain address"
	case odd:
		why = "contains whitespace or a control character"
	case err != nil:
		why = "is not an e-mail address (" + strings.TrimPrefix(err.Error(), "mail: ") + ")"
	}
	return fmt.Errorf("%q %s", s, why)
}
