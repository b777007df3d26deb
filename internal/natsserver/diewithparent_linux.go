package natsserver

import (
	"os/exec"
	"syscall"
)

// dieWithParent has the kernel SIGKILL the server when the test process
// dies (a test timeout, a crash), so no server outlives its test.
func dieWithParent(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
