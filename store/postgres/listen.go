package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Listen calls fn with the service name of every NOTIFY herald_outbox —
// sent by a trigger when a transaction writes outbox rows — until ctx ends.
// It keeps one dedicated connection and reconnects after errors, so relays
// in any process wake as soon as a commit lands.
func (d dialect) Listen(ctx context.Context, fn func(service string)) error {
	if d.cfg == nil {
		return fmt.Errorf("herald/store/postgres: Listen needs a store opened with postgres.Open")
	}
	for ctx.Err() == nil {
		err := d.listenOnce(ctx, fn)
		if ctx.Err() != nil {
			return nil
		}
		// Reconnect after a pause; a missed notification only delays the
		// relay until its next poll.
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
		_ = err
	}
	return nil
}

func (d dialect) listenOnce(ctx context.Context, fn func(string)) error {
	conn, err := pgx.ConnectConfig(ctx, d.cfg.Copy())
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "LISTEN herald_outbox"); err != nil {
		return err
	}
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		fn(n.Payload)
	}
}
