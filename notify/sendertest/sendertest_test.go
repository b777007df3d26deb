package sendertest_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"

	"github.com/heraldhq/herald/notify"
	"github.com/heraldhq/herald/notify/sendertest"
)

// inbox is an in-memory channel: the receiver is a slice, "down" and
// "stalled" are states of it. The flaw, when set, breaks the sender in one
// way the suite must catch.
type inbox struct {
	mu      sync.Mutex
	got     []sendertest.Received
	down    bool
	stalled bool
}

type memSender struct {
	in   *inbox
	flaw string
}

func (s *memSender) Name() string    { return "memory" }
func (s *memSender) Channel() string { return notify.Chat }

func (s *memSender) Send(ctx context.Context, m notify.Message) (notify.Receipt, error) {
	rc := notify.Receipt{Provider: s.Name(), Delivered: true}
	if s.flaw != "ignores-context" {
		if err := ctx.Err(); err != nil {
			return rc, err
		}
	}
	if !strings.HasPrefix(m.To, "mem:") {
		return rc, fmt.Errorf("%w: bad address", notify.ErrPermanent)
	}
	if s.in.stalled {
		<-ctx.Done()
		return rc, ctx.Err()
	}
	s.in.mu.Lock()
	defer s.in.mu.Unlock()
	if s.in.down {
		if s.flaw == "down-is-permanent" {
			return rc, fmt.Errorf("%w: down", notify.ErrPermanent)
		}
		return rc, errors.New("down")
	}
	r := sendertest.Received{To: m.To, Text: m.Text, Key: m.Key}
	if s.flaw == "unstable-key" {
		r.Key = m.Key + "/" + m.Text
	}
	if s.flaw == "interprets-markup" {
		r.Text = strings.ReplaceAll(r.Text, "<script>", "")
	}
	s.in.got = append(s.in.got, r)
	if s.flaw == "duplicates" && strings.HasPrefix(m.Text, "concurrent message 7") {
		s.in.got = append(s.in.got, r)
	}
	return rc, nil
}

func harness(flaw string) sendertest.Harness {
	target := func(t *testing.T, in *inbox) sendertest.Target {
		return sendertest.Target{Sender: &memSender{in: in, flaw: flaw}, To: "mem:x"}
	}
	return sendertest.Harness{
		Channel:      notify.Chat,
		Capabilities: sendertest.Capabilities{Key: true, Delivered: true},
		InvalidTo:    "nowhere",
		Start: func(t *testing.T) sendertest.Env {
			in := &inbox{}
			return sendertest.Env{
				Sender: &memSender{in: in, flaw: flaw},
				To:     func(i int) string { return fmt.Sprintf("mem:%d", i) },
				Received: func() []sendertest.Received {
					in.mu.Lock()
					defer in.mu.Unlock()
					return append([]sendertest.Received(nil), in.got...)
				},
			}
		},
		Down:    func(t *testing.T) sendertest.Target { return target(t, &inbox{down: true}) },
		Stalled: func(t *testing.T) sendertest.Target { return target(t, &inbox{stalled: true}) },
	}
}

func TestSuitePassesACorrectSender(t *testing.T) {
	sendertest.Run(t, harness(""))
}

// TestSuiteCatchesFlaws runs the suite against broken senders in a child
// process (a failing subtest cannot be contained in this one) and expects
// it to fail, naming the subtest that caught the flaw.
func TestSuiteCatchesFlaws(t *testing.T) {
	if flaw := os.Getenv("SENDERTEST_FLAW"); flaw != "" {
		t.Skip("child process")
	}
	for flaw, subtest := range map[string]string{
		"duplicates":        "Concurrent",
		"ignores-context":   "CancelledContext",
		"down-is-permanent": "ReceiverDown",
		"unstable-key":      "Key",
		"interprets-markup": "HostileContent",
	} {
		t.Run(flaw, func(t *testing.T) {
			cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestFlawedSender$", "-test.v")
			cmd.Env = append(os.Environ(), "SENDERTEST_FLAW="+flaw)
			out, err := cmd.CombinedOutput()
			if err == nil {
				t.Fatalf("the suite passed a sender that %s:\n%s", flaw, out)
			}
			if want := "--- FAIL: TestFlawedSender/" + subtest; !strings.Contains(string(out), want) {
				t.Errorf("output lacks %q:\n%s", want, out)
			}
		})
	}
}

func TestFlawedSender(t *testing.T) {
	flaw := os.Getenv("SENDERTEST_FLAW")
	if flaw == "" {
		t.Skip("run by TestSuiteCatchesFlaws")
	}
	sendertest.Run(t, harness(flaw))
}
