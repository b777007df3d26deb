package envelope

import (
	"time"

	"github.com/oklog/ulid/v2"
)

// MinID returns the smallest ID NewID can return for a time in t's
// millisecond: every ID of an earlier millisecond sorts below it. Times
// before the Unix epoch give the smallest ID of all.
func MinID(t time.Time) string {
	var id ulid.ULID
	if t.Before(time.Unix(0, 0)) || id.SetTime(ulid.Timestamp(t)) != nil {
		return ulid.ULID{}.String()
	}
	return id.String()
}
