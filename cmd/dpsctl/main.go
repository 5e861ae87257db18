// Command dpsctl manages a dpsbroker through its admin API: individual
// enrollments, enrollment groups, registration records and CA certificates
// (with proof of possession).
//
//	dpsctl [global flags] <noun> <verb> [flags] [args]
//
// Global flags (also accepted after the verb):
//
//	--server URL     admin API base URL (env DPSCTL_SERVER, default https://127.0.0.1:8443)
//	--token T        bearer token (env DPSBROKER_ADMIN_TOKEN); --token-file reads it from a file
//	--ca-file F      PEM file with the CA that signed the server's certificate (default: system roots)
//	-o json|table    output format (show: json, list: table)
//	--timeout D      per-command timeout (default 30s)
//
// Exit status: 0 on success, 1 when the server or the network refused, 2 on
// a usage error.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/dpsbroker/dpsbroker/clients/service"
)

const (
	defaultServer = "https://127.0.0.1:8443"
	envServer     = "DPSCTL_SERVER"
	envToken      = "DPSBROKER_ADMIN_TOKEN"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// Exit statuses.
const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
)

// usageError is a mistake on the command line: exit 2 with a hint.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return &usageError{fmt.Sprintf(format, args...)} }

// globals are the flags every command accepts.
type globals struct {
	server    string
	token     string
	tokenFile string
	caFile    string
	output    string
	timeout   time.Duration
}

func (g *globals) register(fs *flag.FlagSet) {
	fs.StringVar(&g.server, "server", g.server, "admin API base URL (env "+envServer+")")
	fs.StringVar(&g.token, "token", g.token, "bearer token (env "+envToken+")")
	fs.StringVar(&g.tokenFile, "token-file", g.tokenFile, "file holding the bearer token")
	fs.StringVar(&g.caFile, "ca-file", g.caFile, "PEM file with the server's root CA (default: system roots)")
	fs.StringVar(&g.output, "o", g.output, "output format: json or table")
	fs.DurationVar(&g.timeout, "timeout", g.timeout, "timeout of the whole command")
}

// env is what a command runs with.
type env struct {
	g      *globals
	stdout io.Writer
	stderr io.Writer
	client func() (*service.Client, error)
}

// command is one verb of a noun.
type command struct {
	usage string // arguments and flags, for help
	help  string
	run   func(ctx context.Context, e *env, args []string) error
}

// nouns is the command tree.
func nouns() map[string]map[string]command {
	return map[string]map[string]command{
		"enrollment":   enrollmentCommands(),
		"group":        groupCommands(),
		"registration": registrationCommands(),
		"ca":           caCommands(),
	}
}

// run is the whole CLI; main only wires it to the process.
func run(args []string, stdout, stderr io.Writer) int {
	g := &globals{server: defaultServer, timeout: 30 * time.Second}
	if v := os.Getenv(envServer); v != "" {
		g.server = v
	}
	g.token = os.Getenv(envToken)

	fs := flag.NewFlagSet("dpsctl", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	g.register(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printUsage(stdout)
			return exitOK
		}
		return fail(stderr, usagef("%v", err))
	}
	rest := fs.Args()
	if len(rest) == 0 || rest[0] == "help" {
		if len(rest) == 0 {
			printUsage(stderr)
			return exitUsage
		}
		printUsage(stdout)
		return exitOK
	}
	verbs, ok := nouns()[rest[0]]
	if !ok {
		return fail(stderr, usagef("unknown command %q", rest[0]))
	}
	if len(rest) < 2 {
		return fail(stderr, usagef("%s needs a subcommand: %s", rest[0], strings.Join(verbNames(verbs), ", ")))
	}
	cmd, ok := verbs[rest[1]]
	if !ok {
		return fail(stderr, usagef("unknown subcommand %q of %s; one of: %s", rest[1], rest[0], strings.Join(verbNames(verbs), ", ")))
	}
	e := &env{g: g, stdout: stdout, stderr: stderr}
	e.client = func() (*service.Client, error) { return newClient(g) }
	ctx, cancel := context.WithTimeout(context.Background(), g.timeout)
	defer cancel()
	if err := cmd.run(ctx, e, rest[2:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(stdout, "usage: dpsctl %s %s %s\n\n%s\n", rest[0], rest[1], cmd.usage, cmd.help)
			return exitOK
		}
		return fail(stderr, err)
	}
	return exitOK
}

func fail(stderr io.Writer, err error) int {
	fmt.Fprintf(stderr, "dpsctl: %v\n", err)
	var ue *usageError
	if errors.As(err, &ue) {
		fmt.Fprintln(stderr, "run 'dpsctl help' for usage")
		return exitUsage
	}
	return exitError
}

func verbNames(verbs map[string]command) []string {
	names := make([]string, 0, len(verbs))
	for n := range verbs {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func printUsage(w io.Writer) {
	fmt.Fprint(w, `usage: dpsctl [global flags] <command> <subcommand> [flags] [args]

Global flags (also accepted after the subcommand):
  --server URL    admin API base URL (env DPSCTL_SERVER, default https://127.0.0.1:8443)
  --token T       bearer token (env DPSBROKER_ADMIN_TOKEN); or --token-file FILE
  --ca-file FILE  PEM root CA of the server's certificate (default: system roots)
  -o json|table   output format (show: json, list: table)
  --timeout D     timeout of the whole command (default 30s)

Commands:
`)
	all := nouns()
	names := make([]string, 0, len(all))
	for n := range all {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		for _, v := range verbNames(all[n]) {
			c := all[n][v]
			fmt.Fprintf(w, "  %s %s %s\n      %s\n", n, v, c.usage, c.help)
		}
	}
}

// newClient builds the admin client from the global flags. It refuses
// plain http: the token must not cross the network in clear.
func newClient(g *globals) (*service.Client, error) {
	u, err := url.Parse(g.server)
	if err != nil || u.Host == "" {
		return nil, usagef("--server %q is not a URL like https://host:8443", g.server)
	}
	if u.Scheme != "https" {
		return nil, usagef("--server %q: the admin API is served over https only", g.server)
	}
	token := g.token
	if g.tokenFile != "" {
		b, err := os.ReadFile(g.tokenFile)
		if err != nil {
			return nil, fmt.Errorf("read token file: %w", err)
		}
		token = strings.TrimSpace(string(b))
	}
	if token == "" {
		return nil, usagef("no admin token: set %s, --token or --token-file", envToken)
	}
	tlsConf := &tls.Config{MinVersion: tls.VersionTLS12}
	if g.caFile != "" {
		pemBytes, err := os.ReadFile(g.caFile)
		if err != nil {
			return nil, fmt.Errorf("read CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pemBytes) {
			return nil, fmt.Errorf("CA file %s holds no PEM certificate", g.caFile)
		}
		tlsConf.RootCAs = pool
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = tlsConf
	return service.New(u.String(), token, &http.Client{Transport: tr}), nil
}
