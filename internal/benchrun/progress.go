package benchrun

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mattn/go-isatty"
)

// Bar is a progress bar on the runner's progress writer: redrawn in place
// on a terminal, a line every few seconds otherwise (CI logs), nothing
// without a writer. Its goroutine ends with done.
type Bar struct {
	w     io.Writer
	tty   bool
	label string
	total int64
	n     atomic.Int64
	t0    time.Time
	stop  chan struct{}
	wg    sync.WaitGroup
}

// progress starts a bar for total units of one system's run.
func (r *runner) progress(label string, total int) *Bar { return NewBar(r.cfg.Progress, label, total) }

// NewBar starts a progress bar on w (nil for none) for total units; Done
// stops it.
func NewBar(w io.Writer, label string, total int) *Bar {
	b := &Bar{w: w, label: label, total: int64(total), t0: time.Now(), stop: make(chan struct{})}
	if b.w == nil {
		return b
	}
	if f, ok := b.w.(*os.File); ok {
		b.tty = isatty.IsTerminal(f.Fd())
	}
	every := 3 * time.Second
	if b.tty {
		every = 200 * time.Millisecond
	}
	b.wg.Go(func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-b.stop:
				return
			case <-t.C:
				b.draw(false)
			}
		}
	})
	return b
}

// Add counts n more units done.
func (b *Bar) Add(n int) { b.n.Add(int64(n)) }

// Done stops the bar and draws its last state.
func (b *Bar) Done() {
	if b.w == nil {
		return
	}
	close(b.stop)
	b.wg.Wait()
	b.draw(true)
}

func (b *Bar) draw(last bool) {
	n := min(b.n.Load(), b.total)
	frac := 0.0
	if b.total > 0 {
		frac = float64(n) / float64(b.total)
	}
	const width = 30
	fill := int(frac * width)
	rate := float64(n) / time.Since(b.t0).Seconds()
	line := fmt.Sprintf("%-32s [%s%s] %3.0f%% %d/%d %s/s", b.label, strings.Repeat("█", fill), strings.Repeat("░", width-fill),
		100*frac, n, b.total, Human(rate))
	switch {
	case b.tty && last:
		fmt.Fprintf(b.w, "\r\033[K%s\n", line)
	case b.tty:
		fmt.Fprintf(b.w, "\r\033[K%s", line)
	default:
		fmt.Fprintln(b.w, line)
	}
}

// Human prints a rate like 12.3k, as the tables and the chart label it.
func Human(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%.2fM", v/1e6)
	case v >= 1e3:
		return fmt.Sprintf("%.1fk", v/1e3)
	default:
		return fmt.Sprintf("%.0f", v)
	}
}
