package template

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"reflect"
	"strconv"
	"strings"
	"time"
	"unicode"
)

// builtinFuncs returns the functions every template may call:
//
//	upper s        strings.ToUpper
//	lower s        strings.ToLower
//	trim s         strings.TrimSpace
//	money cents    an integer amount of cents as "12.34" ("-0.05", "1234567.00")
//	date layout t  t (a time.Time, *time.Time or RFC 3339 string) formatted
//	               with the Go layout, e.g. {{date "2006-01-02" .At}} or
//	               {{.At | date "2 Jan 2006"}}
func builtinFuncs() map[string]any {
	return map[string]any{
		"upper": strings.ToUpper,
		"lower": strings.ToLower,
		"trim":  strings.TrimSpace,
		"money": Money,
		"date":  Date,
	}
}

// Money formats an amount of cents as a decimal with two places: 1234 →
// "12.34", -5 → "-0.05". It accepts any integer type, a json.Number, and a
// float64 that holds an integer (what encoding/json decodes numbers into).
// It is the template function money.
func Money(cents any) (string, error) {
	var neg bool
	var mag uint64
	switch v := cents.(type) {
	case int:
		neg, mag = splitInt(int64(v))
	case int8:
		neg, mag = splitInt(int64(v))
	case int16:
		neg, mag = splitInt(int64(v))
	case int32:
		neg, mag = splitInt(int64(v))
	case int64:
		neg, mag = splitInt(v)
	case uint:
		mag = uint64(v)
	case uint8:
		mag = uint64(v)
	case uint16:
		mag = uint64(v)
	case uint32:
		mag = uint64(v)
	case uint64:
		mag = v
	case float64:
		if v != math.Trunc(v) || math.Abs(v) >= 1<<53 {
			return "", fmt.Errorf("money: %v is not a whole number of cents", v)
		}
		neg, mag = splitInt(int64(v))
	case json.Number:
		n, err := v.Int64()
		if err != nil {
			return "", fmt.Errorf("money: %q is not a whole number of cents", v.String())
		}
		neg, mag = splitInt(n)
	default:
		return "", fmt.Errorf("money: want an integer number of cents, got %T", cents)
	}
	var b []byte
	if neg {
		b = append(b, '-')
	}
	b = strconv.AppendUint(b, mag/100, 10)
	b = append(b, '.', byte('0'+mag%100/10), byte('0'+mag%10))
	return string(b), nil
}

func splitInt(v int64) (neg bool, mag uint64) {
	if v < 0 {
		return true, uint64(-(v + 1)) + 1 // no overflow at MinInt64
	}
	return false, uint64(v)
}

// Date formats t with the Go time layout. t may be a time.Time, a non-nil
// *time.Time or a string in RFC 3339 format (what JSON carries). It is the
// template function date.
func Date(layout string, t any) (string, error) {
	switch v := t.(type) {
	case time.Time:
		return v.Format(layout), nil
	case *time.Time:
		if v == nil {
			return "", errors.New("date: nil time")
		}
		return v.Format(layout), nil
	case string:
		tt, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			return "", fmt.Errorf("date: %w", err)
		}
		return tt.Format(layout), nil
	default:
		return "", fmt.Errorf("date: want a time.Time or RFC 3339 string, got %T", t)
	}
}

var errorType = reflect.TypeFor[error]()

// checkFunc reports whether text/template would accept fn under name;
// text/template panics otherwise.
func checkFunc(name string, fn any) error {
	if name == "" {
		return errors.New("empty name")
	}
	for i, r := range name {
		if r != '_' && !unicode.IsLetter(r) && (i == 0 || !unicode.IsDigit(r)) {
			return errors.New("not an identifier")
		}
	}
	v := reflect.ValueOf(fn)
	if v.Kind() != reflect.Func || v.IsNil() {
		return fmt.Errorf("%T is not a function", fn)
	}
	t := v.Type()
	switch {
	case t.NumOut() == 1:
	case t.NumOut() == 2 && t.Out(1) == errorType:
	default:
		return errors.New("want one result, or a result and an error")
	}
	return nil
}
