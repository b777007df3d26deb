package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"
)

// Exit statuses, for scripts. The root command's help documents them.
const (
	exitOK      = 0 // the command did what it was asked
	exitFailure = 1 // it did not: a check found a problem, or it could not do its job
	exitUsage   = 2 // it was asked wrongly: an unknown command or flag, a missing argument, an invalid value
)

const exitStatusHelp = `Exit status:
  0  success
  1  failure: what the command checked is wrong (herald schema check found a
     breaking change, herald demo a lost order), or it could not do its job
     (the NATS server or the database cannot be reached, no such service)
  2  usage error: an unknown command or flag, a missing argument or flag, an
     invalid value`

// usageError is an error of the command line rather than of the work: exit
// status 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usageErrorf(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}

// execute runs the CLI on args, prints an error to stderr and returns the
// exit status.
func execute(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := newRoot()
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return exitOK
	}
	fmt.Fprintln(stderr, "herald:", err)
	var ue usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(stderr, "Run '%s --help' for usage.\n", cmd.CommandPath())
		return exitUsage
	}
	return exitFailure
}

// markUsageErrors makes the errors of cobra's own checks — flags that do
// not parse, arguments that do not fit, unknown subcommands — usage errors.
func markUsageErrors(root *cobra.Command) {
	root.InitDefaultHelpCmd()
	root.InitDefaultCompletionCmd()
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		switch {
		case !c.Runnable() && c.HasSubCommands():
			// Without this, cobra prints the help of "herald dlq bogus" and
			// exits 0.
			c.Args = cobra.ArbitraryArgs
			c.RunE = func(cmd *cobra.Command, args []string) error {
				if len(args) == 0 {
					return cmd.Help()
				}
				hint := ""
				if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
					hint = " (did you mean " + strings.Join(s, " or ") + "?)"
				}
				return usageErrorf("unknown command %q for %q%s", args[0], cmd.CommandPath(), hint)
			}
		case c.Args != nil:
			check := c.Args
			c.Args = func(cmd *cobra.Command, args []string) error {
				if err := check(cmd, args); err != nil {
					return usageError{err}
				}
				return nil
			}
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
}
