package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
)

// newFlags returns a flag set for one subcommand that also accepts the
// global flags.
func newFlags(e *env, name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	e.g.register(fs)
	return fs
}

// parse parses flags and positional arguments in any order ("show ID -o
// table" as well as "show -o table ID") and checks the number of
// positional arguments.
func parse(fs *flag.FlagSet, args []string, nPositional int, names ...string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, usagef("%v", err)
		}
		args = fs.Args()
		if len(args) == 0 {
			break
		}
		if args[0] == "--" {
			pos = append(pos, args[1:]...)
			break
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
	if len(pos) != nPositional {
		if nPositional == 0 {
			return nil, usagef("unexpected argument %q", pos[0])
		}
		return nil, usagef("expected %s, got %d argument(s)", strings.Join(names, " "), len(pos))
	}
	return pos, nil
}

// stringList is a repeatable flag.
type stringList []string

func (l *stringList) String() string { return strings.Join(*l, ",") }

func (l *stringList) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l = append(*l, s)
		}
	}
	return nil
}

// readPEMFile reads a certificate file for upload; the server parses and
// judges it, so that the CLI and the API give the same answer.
func readPEMFile(flagName, path string) (string, error) {
	if path == "" {
		return "", nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("--%s: %w", flagName, err)
	}
	return string(b), nil
}

// outputFormat resolves -o against the command's default.
func outputFormat(e *env, def string) (string, error) {
	switch e.g.output {
	case "":
		return def, nil
	case "json", "table":
		return e.g.output, nil
	default:
		return "", usagef("-o %q: use json or table", e.g.output)
	}
}
