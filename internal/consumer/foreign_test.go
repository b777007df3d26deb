package consumer

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"
	"testing/synctest"

	"github.com/heraldhq/herald/envelope"
	"github.com/heraldhq/herald/store"
)

// Events without ce-heraldkind come from producers that are not herald
// services: CheckForeign sees them, and only them, before Decode; its
// error dead-letters the event. A message that cannot be decoded is a
// dead letter naming the id, type and version it carried.
func TestForeignEventsAreChecked(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, tb := setup(t, nil)
		var mu sync.Mutex
		var checked []string
		tb.cfg.CheckForeign = func(e *envelope.Envelope) error {
			mu.Lock()
			defer mu.Unlock()
			checked = append(checked, e.ID)
			if e.ID == "ev-2" {
				return errors.New("at '/n': got string, want integer")
			}
			return nil
		}
		start(t, c)
		broken := tb.ev(4, "d")
		broken.header = maps.Clone(broken.header)
		broken.header[envelope.HeaderTime] = "yesterday"
		broken.header[envelope.HeaderVersion] = "1"
		tb.send(tb.ev(1, "a"), foreign(tb.ev(2, "b")), foreign(tb.ev(3, "c")), broken)

		mu.Lock()
		if !slices.Equal(checked, []string{"ev-2", "ev-3"}) {
			t.Errorf("CheckForeign saw %v, want the foreign ev-2 and ev-3 only", checked)
		}
		mu.Unlock()
		wantCommitted(t, tb, 1, 3)
		got := map[string]string{}
		for _, dl := range tb.store.deadLetters() {
			got[dl.EventID] = fmt.Sprintf("%s %s v%d: %s", dl.Reason, dl.Type, dl.Version, dl.LastError)
		}
		want := map[string]string{
			"ev-2": store.ReasonMalformed + " " + testType + " v1: at '/n': got string, want integer",
			"ev-4": store.ReasonMalformed + " " + testType + ` v1: herald/envelope: invalid envelope: header ce-time is "yesterday": ` +
				`parsing time "yesterday" as "2006-01-02T15:04:05.999999999Z07:00": cannot parse "yesterday" as "2006"`,
		}
		if !maps.Equal(got, want) {
			t.Errorf("dead letters:\n%q\nwant\n%q", got, want)
		}
	})
}

// A foreign producer may correct an event it sent and send it again under
// the same ce-id: the dead letter of the first holds only a redelivery of
// the same data, and the corrected event reaches the handler.
func TestForeignEventCorrectedUnderItsID(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, tb := setup(t, nil)
		bad := []byte(`{"n":"two"}`)
		tb.cfg.CheckForeign = func(e *envelope.Envelope) error {
			if string(e.Data) == string(bad) {
				return errors.New("at '/n': got string, want integer")
			}
			return nil
		}
		start(t, c)
		as2 := func(d *fakeDelivery) *fakeDelivery { d.header[envelope.HeaderID] = "ev-2"; return foreign(d) }
		first := as2(tb.ev(2, "b"))
		first.data = bad
		tb.send(first)
		tb.send(again(first))
		tb.send(as2(tb.ev(5, "b"))) // corrected, the same ce-id
		wantCommitted(t, tb, 5)
		if dls := tb.store.deadLetters(); len(dls) != 1 || dls[0].EventID != "ev-2" {
			t.Errorf("dead letters %+v, want one, of ev-2", dls)
		}
	})
}

// foreign makes d an event of a producer that is not a herald service: no
// ce-heraldkind, no ce-heraldversion.
func foreign(d *fakeDelivery) *fakeDelivery {
	d.header = maps.Clone(d.header)
	delete(d.header, envelope.HeaderKind)
	delete(d.header, envelope.HeaderVersion)
	return d
}
