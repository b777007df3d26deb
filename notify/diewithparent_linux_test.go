package notify_test

import (
	"os/exec"
	"syscall"
)

// dieWithParent has the kernel SIGKILL the child when the test process dies
// (a timeout, a crash), so no notifier outlives its test.
func dieWithParent(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
