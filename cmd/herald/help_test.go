package main

import (
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// commands calls fn for every command of the CLI except cobra's own help
// and completion.
func commands(fn func(*cobra.Command)) {
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if c.HasParent() && (c.Name() == "help" || c.Name() == "completion") {
			return
		}
		fn(c)
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(newRoot())
}

// placeholder is how a flag's value is named in help: pflag's name of its
// type, or a word in capitals taken from the usage's `BACKQUOTES`.
var placeholder = regexp.MustCompile(`^([A-Z][A-Z0-9_]*(:[A-Z][A-Z0-9_]*)?|string|int|int64Slice|stringArray|duration|float64|uint)$`)

// TestHelpOfEveryCommand: every command has an Example, every flag's usage
// names its value with a placeholder (pflag turns the first `backquoted`
// text of a usage into the placeholder: "--from herald catalog --format
// json" came from a backquoted command), and --help exits 0 with none of
// those backquotes left.
func TestHelpOfEveryCommand(t *testing.T) {
	n := 0
	commands(func(c *cobra.Command) {
		n++
		path := c.CommandPath()
		if strings.TrimSpace(c.Example) == "" {
			t.Errorf("%s has no Example", path)
		}
		check := func(f *pflag.Flag) {
			name, usage := pflag.UnquoteUsage(f)
			if f.Value.Type() == "bool" {
				name = ""
			}
			if name != "" && !placeholder.MatchString(name) {
				t.Errorf("%s --%s: the placeholder is %q (usage %q)", path, f.Name, name, f.Usage)
			}
			if strings.Contains(usage, "`") {
				t.Errorf("%s --%s: backquotes left in %q", path, f.Name, usage)
			}
		}
		c.LocalFlags().VisitAll(check)
		c.InheritedFlags().VisitAll(check)

		args := append(strings.Fields(strings.TrimPrefix(path, "herald")), "--help")
		code, out, stderr := runExit(t, args...)
		if code != exitOK || stderr != "" || !strings.Contains(out, "Examples:") {
			t.Errorf("herald %s: exit %d, stderr %q:\n%s", strings.Join(args, " "), code, stderr, out)
		}
		if strings.Contains(out, "`") || strings.Contains(out, "CheckLock") {
			t.Errorf("herald %s shows a backquote or a function that does not exist:\n%s", strings.Join(args, " "), out)
		}
	})
	if n < 18 {
		t.Errorf("walked %d commands", n)
	}
}

// TestExamplesParse: every herald command line in an Example names a real
// command with flags it has and arguments it accepts.
func TestExamplesParse(t *testing.T) {
	commands(func(c *cobra.Command) {
		for _, line := range strings.Split(c.Example, "\n") {
			if err := parseExample(line); err != nil {
				t.Errorf("%s: example %q: %v", c.CommandPath(), strings.TrimSpace(line), err)
			}
		}
	})
}

// parseExample parses a "herald …" command line against the real command
// tree, up to a shell operator or comment; other lines are not commands.
func parseExample(line string) error {
	words := strings.Fields(line)
	if len(words) == 0 || words[0] != "herald" {
		return nil
	}
	for i, w := range words {
		if w == "|" || w == ">" || w == "&" || w == "#" || w == "&&" {
			words = words[:i]
			break
		}
	}
	root := newRoot()
	cmd, rest, err := root.Find(words[1:])
	if err == nil {
		err = cmd.ParseFlags(rest)
		if errors.Is(err, pflag.ErrHelp) {
			return nil // --help is a command too
		}
	}
	if err == nil {
		pos := cmd.Flags().Args()
		switch {
		case cmd.HasSubCommands() && len(pos) > 0 && !slices.Contains(cmd.ValidArgs, pos[0]): // herald bench has both
			err = usageErrorf("unknown command %q", pos[0])
		case cmd.Args != nil:
			err = cmd.Args(cmd, pos)
		}
	}
	return err
}

// TestREADMECommandsParse: every herald command the README shows in a shell
// block (bare, or as go run ./cmd/herald) parses against the real command
// tree, flags and arguments included, so the README cannot drift from the
// CLI.
func TestREADMECommandsParse(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	inShell, n := false, 0
	for i, line := range strings.Split(string(b), "\n") {
		trimmed := strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(trimmed, "```"):
			inShell = !inShell && (trimmed == "```sh" || trimmed == "```bash" || trimmed == "```console")
			continue
		case !inShell:
			continue
		}
		trimmed = strings.TrimPrefix(trimmed, "$ ")
		trimmed = strings.Replace(trimmed, "go run ./cmd/herald ", "herald ", 1)
		if !strings.HasPrefix(trimmed, "herald ") {
			continue
		}
		n++
		if err := parseExample(trimmed); err != nil {
			t.Errorf("README.md:%d: %q: %v", i+1, trimmed, err)
		}
	}
	if n < 10 {
		t.Fatalf("found %d herald commands in the README's shell blocks, want its examples (at least 10)", n)
	}
}
