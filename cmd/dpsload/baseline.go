package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/dpsbroker/dpsbroker/cmd/dpsload/internal/baseline"
	"github.com/dpsbroker/dpsbroker/cmd/internal/memrelease"
)

// childEnv marks a process started by dpsload as its baseline broker. The
// binary ignores it; test binaries use it to run main instead of tests.
const childEnv = "DPSLOAD_CHILD"

// serveBaseline runs the baseline broker until interrupted: the reference
// broker of --baseline, usable on its own with --baseline-broker.
func serveBaseline(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("dpsload serve-baseline", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:8893", "MQTT-over-TLS listen `address`")
	certFile := fs.String("tls-cert", "", "server certificate chain `file` (PEM); use the broker's own for identical TLS")
	keyFile := fs.String("tls-key", "", "server key `file` (PEM)")
	clientCA := fs.String("client-ca", "", "PEM `file` of the CAs that device certificates must chain to")
	kex := fs.String("kex", baseline.KexDefault, "TLS 1.3 key exchange: default, x25519, p256 (as the broker's --key-exchange)")
	tickets := fs.Bool("tickets", false, "enable TLS session tickets (as the broker's --session-tickets)")
	stdinEOF := fs.Bool("exit-on-stdin-eof", false, "exit when stdin closes (used when dpsload starts it)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if *certFile == "" || *keyFile == "" || *clientCA == "" {
		fmt.Fprintln(stderr, "dpsload serve-baseline: --tls-cert, --tls-key and --client-ca are required")
		return exitUsage
	}
	cert, err := tls.LoadX509KeyPair(*certFile, *keyFile)
	if err != nil {
		fmt.Fprintf(stderr, "dpsload serve-baseline: %v\n", err)
		return exitError
	}
	caPEM, err := os.ReadFile(*clientCA)
	if err != nil {
		fmt.Fprintf(stderr, "dpsload serve-baseline: %v\n", err)
		return exitError
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		fmt.Fprintf(stderr, "dpsload serve-baseline: %s: no PEM certificate\n", *clientCA)
		return exitError
	}
	cfg, err := baseline.TLSConfig(cert, pool, *kex, *tickets)
	if err != nil {
		fmt.Fprintf(stderr, "dpsload serve-baseline: %v\n", err)
		return exitUsage
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	srv, err := baseline.Start(*listen, cfg, logger)
	if err != nil {
		fmt.Fprintf(stderr, "dpsload serve-baseline: %v\n", err)
		return exitError
	}
	defer func() { _ = srv.Close() }()
	// SIGUSR1 collects and returns free memory, as dpsbroker does: "dpsload
	// hold --collect" measures both the same way.
	memrelease.Handle(ctx, logger)
	fmt.Fprintf(stdout, "listening %s\n", srv.Addr())

	done := ctx.Done()
	if *stdinEOF {
		// The parent holds our stdin: when it exits, however it exits,
		// the pipe closes and so do we.
		gone := make(chan struct{})
		go func() {
			_, _ = io.Copy(io.Discard, os.Stdin)
			close(gone)
		}()
		select {
		case <-gone:
		case <-done:
		}
	} else {
		<-done
	}
	fmt.Fprintf(stderr, "dpsload serve-baseline: answered %d requests\n", srv.Answered())
	return exitOK
}

// child is a started baseline broker process.
type child struct {
	addr string
	pid  int
	stop func(io.Writer)
}

// startChild runs this executable's serve-baseline and waits for its
// address.
func startChild(ctx context.Context, args []string, stderr io.Writer) (*child, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("baseline: %w", err)
	}
	cmd := exec.Command(exe, append([]string{"serve-baseline", "--exit-on-stdin-eof"}, args...)...)
	cmd.Env = append(os.Environ(), childEnv+"=1")
	cmd.Stderr = stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("baseline: %w", err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("baseline: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("baseline: %w", err)
	}
	exited := make(chan error, 1)
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		if sc.Scan() {
			lines <- sc.Text()
		}
		for sc.Scan() { // drain, so the child never blocks on stdout
		}
		exited <- cmd.Wait()
	}()
	stop := func(w io.Writer) {
		_ = stdin.Close()
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
			fmt.Fprintf(w, "dpsload: baseline pid %d did not stop; killed\n", cmd.Process.Pid)
		}
	}
	select {
	case line := <-lines:
		addr, ok := strings.CutPrefix(line, "listening ")
		if !ok {
			stop(stderr)
			return nil, fmt.Errorf("baseline: unexpected first line %q", line)
		}
		return &child{addr: addr, pid: cmd.Process.Pid, stop: stop}, nil
	case err := <-exited:
		return nil, fmt.Errorf("baseline: exited before listening: %v", err)
	case <-time.After(15 * time.Second):
		stop(stderr)
		return nil, errors.New("baseline: no address within 15 s")
	case <-ctx.Done():
		stop(stderr)
		return nil, ctx.Err()
	}
}
