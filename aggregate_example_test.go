package herald_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/heraldhq/herald"
)

// The state of an inventory item and its domain events.
type (
	Item         struct{ OnHand, Reserved int }
	ItemReceived struct{ Qty int }
	ItemReserved struct{ Qty int }
)

var (
	exItemReceived = herald.Domain[ItemReceived]("inventory.item-received")
	exItemReserved = herald.Domain[ItemReserved]("inventory.item-reserved")
)

// An event-sourced aggregate is its stream of domain events: Load rebuilds
// the state from them (from the newest snapshot on), Append records the
// next one — event log, domain handlers, translations and outbox, as Record
// does — at the stream's next version. Two transactions that loaded the same
// version cannot both append: the second fails with ErrConcurrencyConflict,
// and RetryConflicts makes Do decide again on the new state.
func ExampleAggregate() {
	ctx := context.Background()
	dir, done := exampleDir()
	defer done()
	db := exampleDB(ctx, dir, "inventory")
	defer db.Close()

	item := herald.Aggregate[Item]("inventory.item", herald.Snapshot(100))
	_ = herald.Apply(item, exItemReceived, func(s *Item, e ItemReceived) { s.OnHand += e.Qty })
	_ = herald.Apply(item, exItemReserved, func(s *Item, e ItemReserved) { s.Reserved += e.Qty })
	inventory, _ := herald.New("inventory", herald.WithStore(db), quietLog)
	if err := inventory.RegisterAggregate(item); err != nil {
		panic(err)
	}

	errSoldOut := errors.New("sold out")
	reserve := func(sku string, qty int) error {
		return inventory.Do(ctx, func(tx herald.Tx) error {
			it, err := herald.Load(tx, item, sku)
			if err != nil {
				return err
			}
			if s := it.State(); s.OnHand-s.Reserved < qty {
				return fmt.Errorf("%s: %w", sku, errSoldOut)
			}
			return herald.Append(tx, it, exItemReserved, ItemReserved{Qty: qty})
		}, herald.RetryConflicts(5))
	}
	_ = inventory.Do(ctx, func(tx herald.Tx) error {
		it, err := herald.Load(tx, item, "sku-1")
		if err != nil {
			return err
		}
		return herald.Append(tx, it, exItemReceived, ItemReceived{Qty: 3})
	})
	fmt.Println(reserve("sku-1", 2))
	fmt.Println(reserve("sku-1", 2))
	_ = inventory.Do(ctx, func(tx herald.Tx) error {
		it, err := herald.Load(tx, item, "sku-1")
		if err == nil {
			fmt.Printf("version %d: %+v\n", it.Version(), it.State())
		}
		return err
	})
	// Output:
	// <nil>
	// sku-1: sold out
	// version 2: {OnHand:3 Reserved:2}
}
