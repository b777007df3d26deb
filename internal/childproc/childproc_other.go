//go:build !linux

// Package childproc holds what tests need to start processes of their own:
// servers, and the test binary re-executed in a role.
package childproc

import "os/exec"

// DieWithParent does nothing outside Linux: the test's cleanup kills the
// child.
func DieWithParent(cmd *exec.Cmd) {}
