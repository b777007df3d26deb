//go:build !linux

package e2e

import "os/exec"

// dieWithParent does nothing outside Linux: the test's cleanup kills the
// processes.
func dieWithParent(cmd *exec.Cmd) {}
