package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/notify"
	"github.com/heraldhq/herald/notify/devbox"
)

// TestMain runs the program itself when the test binary is started with
// HERALD_EXAMPLE_MAIN=1 (see TestProgram).
func TestMain(m *testing.M) {
	if os.Getenv("HERALD_EXAMPLE_MAIN") == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestNotifications runs the README's notifications quickstart and checks
// the mailbox, the log channel, the delivery log and the warning about
// carol's missing address.
func TestNotifications(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	box, err := devbox.New()
	if err != nil {
		t.Fatal(err)
	}
	var out, logs bytes.Buffer
	if err := run(ctx, t.TempDir(), box, &out, &logs); err != nil {
		t.Fatalf("%v\noutput:\n%s\nlogs:\n%s", err, &out, &logs)
	}
	t.Logf("output:\n%s", &out)

	// The mailbox: alice's welcome e-mail only (bob opted out, carol has
	// no address).
	mail := box.List(devbox.Filter{})
	if len(mail) != 1 {
		t.Fatalf("mailbox holds %d messages, want 1: %+v", len(mail), mail)
	}
	m := mail[0].Message
	if m.Channel != notify.Email || m.To != "alice@example.com" || m.Subject != "Welcome to herald, Alice" ||
		m.Text != "Hello Alice,\n\nyour pro account is ready.\n" || !strings.Contains(m.EventType, "accounts.signed-up") {
		t.Errorf("e-mail %+v", m)
	}

	// The log channel: one line per user, in any order.
	got := out.String()
	for _, line := range []string{"log: alice signed up (pro)\n", "log: bob signed up (free)\n", "log: carol signed up (free)\n"} {
		if strings.Count(got, line) != 1 {
			t.Errorf("output has %q %d times, want once", line, strings.Count(got, line))
		}
	}
	// The delivery log, as printed.
	for _, re := range []string{
		`(?m)^  alice  email  delivered$`,
		`(?m)^  bob    email  suppressed \(opted-out: bob turned accounts off on email\)$`,
		`(?m)^  carol  email  failed \(no-address: carol has no email address\)$`,
		`(?m)^  (alice|bob|carol) +log +sent$`,
		`(?m)^mailbox: 1 message\(s\)\n  to alice@example\.com: "Welcome to herald, Alice"$`,
	} {
		if !regexp.MustCompile(re).MatchString(got) {
			t.Errorf("output does not match %s", re)
		}
	}
	if n := len(regexp.MustCompile(`(?m)^  \w+ +log +sent$`).FindAllString(got, -1)); n != 3 {
		t.Errorf("%d log deliveries sent, want 3", n)
	}
	// carol's missing address is logged, once.
	if n := strings.Count(logs.String(), "has no address on the channel"); n != 1 ||
		!strings.Contains(logs.String(), "recipient=carol channel=email") {
		t.Errorf("%d warnings about a missing address, want 1 for carol's e-mail; logs:\n%s", n, &logs)
	}
}

// TestProgram runs the program's main, as `go run ./examples/notifications`
// does, in a child process (this test binary), and checks what it prints.
func TestProgram(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "HERALD_EXAMPLE_MAIN=1")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("program: %v\nstdout:\n%s\nstderr:\n%s", err, &stdout, &stderr)
	}
	for _, want := range []string{"log: alice signed up (pro)\n", "  carol  email  failed (no-address: carol has no email address)\n",
		"mailbox: 1 message(s)\n  to alice@example.com: \"Welcome to herald, Alice\"\n"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("stdout lacks %q:\n%s", want, &stdout)
		}
	}
	if !strings.Contains(stderr.String(), "recipient=carol channel=email") {
		t.Errorf("stderr lacks the warning about carol's address:\n%s", &stderr)
	}
}
