package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/dpsbroker/dpsbroker/clients/device"
	"github.com/dpsbroker/dpsbroker/clients/tpm"
)

// tpmPathHelp describes --tpm where it names the TPM to open (its default
// is tpm.DefaultDevicePath).
const tpmPathHelp = "the TPM: a device path (/dev/tpmrm0), tcp:HOST:PORT (swtpm), or sim (in-process simulator, tests only)"

// newFlagSet is a subcommand's flag set; its name prefixes usage errors.
func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

// parseFlags parses args and checks them with check. When the run ends
// here (help, or a usage error, printed with the usage), ok is false and
// code is the exit status.
func parseFlags(fs *flag.FlagSet, args []string, check func(rest []string) error, stderr io.Writer) (code int, ok bool) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK, false
		}
		return exitUsage, false
	}
	if err := check(fs.Args()); err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", fs.Name(), err)
		fs.Usage()
		return exitUsage, false
	}
	return exitOK, true
}

// requireFlags names, in one message, every required flag left empty, and
// refuses positional arguments (no subcommand takes any).
func requireFlags(rest []string, required ...[2]string) error {
	var missing []string
	for _, m := range required {
		if m[1] == "" {
			missing = append(missing, m[0])
		}
	}
	switch {
	case len(missing) > 0:
		return fmt.Errorf("missing %s", strings.Join(missing, ", "))
	case len(rest) > 0:
		return fmt.Errorf("unexpected argument %q", rest[0])
	}
	return nil
}

// connFlags are the flags every provisioning subcommand has: the broker,
// how to trust it, and how the run goes.
type connFlags struct {
	broker, idScope, registrationID string
	caFile, serverName              string
	payload                         string
	timeout                         time.Duration
	verbose                         bool
}

// register adds the flags; registrationIDHelp says how the subcommand
// defaults the registration ID.
func (c *connFlags) register(fs *flag.FlagSet, registrationIDHelp string) {
	fs.StringVar(&c.broker, "broker", "", "broker MQTT TLS address, host:port (required)")
	fs.StringVar(&c.idScope, "id-scope", "", "DPS ID scope (required)")
	fs.StringVar(&c.caFile, "ca", "", "PEM file: CA certificates that verify the broker (default: system roots)")
	fs.StringVar(&c.serverName, "server-name", "", "name to verify in the broker's certificate (default: the --broker host)")
	fs.StringVar(&c.registrationID, "registration-id", "", registrationIDHelp)
	fs.StringVar(&c.payload, "payload", "", "custom JSON sent with the register request")
	fs.DurationVar(&c.timeout, "timeout", 60*time.Second, "give up after this long")
	fs.BoolVar(&c.verbose, "v", false, "log each step to standard error")
}

// checkRun finds mistakes in the flags of the run itself.
func (c *connFlags) checkRun() error {
	switch {
	case c.payload != "" && !json.Valid([]byte(c.payload)):
		return errors.New("--payload is not valid JSON")
	case c.timeout <= 0:
		return errors.New("--timeout must be positive")
	}
	return nil
}

// config is the device configuration the flags describe, without the
// attestation.
func (c *connFlags) config() (device.Config, error) {
	tlsCfg, err := brokerTLS(c.caFile, c.serverName)
	if err != nil {
		return device.Config{}, err
	}
	cfg := device.Config{
		Broker:         c.broker,
		IDScope:        c.idScope,
		RegistrationID: c.registrationID,
		TLSConfig:      tlsCfg,
	}
	if c.payload != "" {
		cfg.Payload = json.RawMessage(c.payload)
	}
	return cfg, nil
}

// provision provisions with cfg and prints the registration state as JSON;
// sub names the subcommand in usage errors.
func (c *connFlags) provision(ctx context.Context, cfg device.Config, sub string, stdout, stderr io.Writer) int {
	if c.verbose {
		cfg.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	res, err := device.Provision(ctx, cfg)
	if errors.Is(err, device.ErrInvalidConfig) {
		fmt.Fprintf(stderr, "dpsdevice %s: %v\n", sub, err)
		return exitUsage
	}
	if err != nil {
		fmt.Fprintf(stderr, "dpsdevice: %s\n", describe(err, c.timeout))
		return exitError
	}
	out, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		fmt.Fprintf(stderr, "dpsdevice: encode result: %v\n", err)
		return exitError
	}
	if _, err := fmt.Fprintf(stdout, "%s\n", out); err != nil {
		return exitError
	}
	return exitOK
}

// openDevice opens the TPM named by --tpm and prepares a Device on it;
// the returned function closes both.
func openDevice(ctx context.Context, path string, opts tpm.Options) (*tpm.Device, func(), error) {
	tr, err := openTPM(path)
	if err != nil {
		return nil, nil, err
	}
	d, err := tpm.New(ctx, tr, opts)
	if err != nil {
		tr.Close()
		return nil, nil, err
	}
	return d, func() { d.Close(); tr.Close() }, nil
}
