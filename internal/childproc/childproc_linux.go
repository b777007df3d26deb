// Package childproc holds what tests need to start processes of their own:
// servers, and the test binary re-executed in a role.
package childproc

import (
	"os/exec"
	"syscall"
)

// DieWithParent has the kernel SIGKILL cmd's process when the test process
// dies (a timeout, a crash), so no child outlives its test.
func DieWithParent(cmd *exec.Cmd) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
}
