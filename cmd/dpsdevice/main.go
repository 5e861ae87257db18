// Command dpsdevice provisions a device with dpsbroker (or any Azure
// DPS-compatible MQTT endpoint) and prints its registration state.
//
//	dpsdevice <attestation> [flags]
//
// Attestations:
//
//	x509    an X.509 device: certificate chain and key from PEM files
//	tpm     a TPM 2.0 device: EK/SRK challenge answered inside the TPM
//
//	dpsdevice x509 --broker HOST:PORT --id-scope SCOPE --cert dev.pem --key dev.key \
//	    [--ca root.pem] [--registration-id ID] [--payload '{"a":1}'] [--timeout 60s] [-v]
//
// An X.509 device whose TLS key lives in a TPM creates the key there and
// gets a CSR for it (the key is never exported: it stays at a persistent
// handle, or is saved wrapped by the TPM's storage root key), has the CSR
// signed by its enrollment group's CA, then provisions with --tpm-key
// instead of --key:
//
//	dpsdevice x509 keygen --tpm /dev/tpmrm0|tcp:HOST:PORT|sim --registration-id ID --csr dev.csr \
//	    (--persist-handle 0x81000002 | --key-blob dev.tpmkey) [--srk-type ecc|rsa]
//	dpsdevice x509 --tpm /dev/tpmrm0 --tpm-key 0x81000002|dev.tpmkey --cert dev.pem \
//	    --broker HOST:PORT --id-scope SCOPE [--ca root.pem]
//
// The certificate's public key must be the TPM key's; otherwise dpsdevice
// stops before connecting and prints both key fingerprints.
//
//	dpsdevice tpm --broker HOST:PORT --id-scope SCOPE [--tpm /dev/tpmrm0|tcp:HOST:PORT|sim] \
//	    [--registration-id ID] [--ek-cert nv|ek.pem [--ek-chain inter.pem]] [--reconnect] [--persist]
//
// On success the registration state is printed as indented JSON on
// standard output. With -v every step (dial, CONNECT, SUBSCRIBE, each
// request and response, each wait) is logged to standard error; key
// material never is.
//
// Exit status: 0 when assigned, 1 when the broker refused or provisioning
// failed (the message carries the DPS error code), 2 on a usage error
// (including flags that contradict the certificate, such as a
// --registration-id other than its CN).
package main

import (
	"context"
	"crypto"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/dpsbroker/dpsbroker/clients/device"
	"github.com/dpsbroker/dpsbroker/clients/tpm"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// Exit statuses.
const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
)

// command is one attestation subcommand. TPM and symmetric-key devices
// join this table as they are implemented.
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) int
}

var commands = []command{
	{"x509", "provision an X.509 device (certificate chain and key from PEM files, or the key in a TPM; 'x509 keygen' makes one)", runX509},
	{"tpm", "provision a TPM device (TPM 2.0 challenge: /dev/tpmrm0, swtpm over TCP, or the simulator)", runTPM},
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: dpsdevice <attestation> [flags]")
	fmt.Fprintln(w, "\nattestations:")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-6s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nRun 'dpsdevice <attestation> -h' for its flags.")
}

// run is the whole program, in-process for tests.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return exitUsage
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		usage(stdout)
		return exitOK
	}
	for _, c := range commands {
		if c.name == args[0] {
			return c.run(ctx, args[1:], stdout, stderr)
		}
	}
	fmt.Fprintf(stderr, "dpsdevice: unknown attestation %q\n\n", args[0])
	usage(stderr)
	return exitUsage
}

// x509Flags are the flags of "dpsdevice x509".
type x509Flags struct {
	connFlags
	certFile, keyFile string
	tpmPath, tpmKey   string

	tpmRef tpmKeyRef // parsed --tpm-key
}

func runX509(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "keygen" {
		return runKeygen(ctx, args[1:], stdout, stderr)
	}
	var f x509Flags
	fs := newFlagSet("dpsdevice x509", stderr)
	f.register(fs, "registration ID (default: the certificate's CN, which it must equal)")
	fs.StringVar(&f.certFile, "cert", "", "PEM file: device certificate, then its intermediates (required)")
	fs.StringVar(&f.keyFile, "key", "", "PEM file: device private key, PKCS #8, EC or PKCS #1 (default: in --cert)")
	fs.StringVar(&f.tpmKey, "tpm-key", "", "the device key is in the TPM instead: its persistent handle (0x81000002) or the key file of 'x509 keygen --key-blob'")
	fs.StringVar(&f.tpmPath, "tpm", "", "the TPM holding --tpm-key: a device path, tcp:HOST:PORT (swtpm), or sim (default "+tpm.DefaultDevicePath+")")
	fs.Usage = func() {
		fmt.Fprint(stderr, `usage: dpsdevice x509 --broker HOST:PORT --id-scope SCOPE --cert dev.pem [--key dev.key] [--ca root.pem] [flags]
       dpsdevice x509 --broker HOST:PORT --id-scope SCOPE --cert dev.pem --tpm-key 0x81000002|dev.tpmkey [--tpm PATH] [flags]
       dpsdevice x509 keygen -h    (create a key in the TPM and a CSR for it)

`)
		fs.PrintDefaults()
	}
	if code, ok := parseFlags(fs, args, f.check, stderr); !ok {
		return code
	}

	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	var key crypto.Signer
	if f.tpmKey != "" {
		s, closeTPM, err := loadTPMSigner(ctx, f.tpmPath, f.tpmRef)
		if err != nil {
			fmt.Fprintf(stderr, "dpsdevice: TPM key %s: %v\n", f.tpmRef, err)
			return exitError
		}
		defer closeTPM()
		key = s
	}
	cfg, err := f.config(key)
	if err != nil && key != nil && errors.Is(err, device.ErrKeyMismatch) {
		fmt.Fprintf(stderr, "dpsdevice: %s is not a certificate for TPM key %s; not connecting.\n  %v\n", f.certFile, f.tpmRef, err)
		return exitError
	}
	if err != nil {
		fmt.Fprintf(stderr, "dpsdevice: %v\n", err)
		return exitError
	}
	return f.provision(ctx, cfg, "x509", stdout, stderr)
}

// check finds the mistakes that are the caller's, before any file is read.
func (f *x509Flags) check(rest []string) error {
	if err := requireFlags(rest, [2]string{"--broker", f.broker}, [2]string{"--id-scope", f.idScope}, [2]string{"--cert", f.certFile}); err != nil {
		return err
	}
	if err := f.checkRun(); err != nil {
		return err
	}
	switch {
	case f.tpmKey != "" && f.keyFile != "":
		return errors.New("--key and --tpm-key exclude each other: the key is in a file or in the TPM")
	case f.tpmPath != "" && f.tpmKey == "":
		return errors.New("--tpm needs --tpm-key (the handle or key file of the device key in that TPM)")
	}
	if f.tpmKey != "" {
		ref, err := parseTPMKeyRef(f.tpmKey)
		if err != nil {
			return fmt.Errorf("--tpm-key: %w", err)
		}
		f.tpmRef = ref
		if f.tpmPath == "" {
			f.tpmPath = tpm.DefaultDevicePath
		}
	}
	return nil
}

// config reads the files the flags name. key, when not nil, is the
// device key held elsewhere (the TPM); the certificate must be its.
func (f *x509Flags) config(key crypto.Signer) (device.Config, error) {
	var id tls.Certificate
	var err error
	if key != nil {
		id, err = device.LoadX509IdentityWithKey(f.certFile, key)
	} else {
		id, err = device.LoadX509Identity(f.certFile, f.keyFile)
	}
	if err != nil {
		return device.Config{}, err
	}
	cfg, err := f.connFlags.config()
	if err != nil {
		return device.Config{}, err
	}
	cfg.Certificate = &id
	return cfg, nil
}

// describe turns an error into the line a device owner reads: what
// happened, and the DPS error code to look up.
func describe(err error, timeout time.Duration) string {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Sprintf("no result within %v: %v", timeout, err)
	case errors.Is(err, context.Canceled):
		return fmt.Sprintf("interrupted: %v", err)
	}
	var ce *device.ConnectError
	var de *device.Error
	var re *device.RegistrationError
	switch {
	case errors.As(err, &ce):
		return "refused by the broker: " + err.Error() + codeSuffix(err)
	case errors.As(err, &de):
		return "provisioning failed: " + err.Error() + codeSuffix(err)
	case errors.As(err, &re):
		return "provisioning " + string(re.Status) + ": " + err.Error() + codeSuffix(err)
	}
	return err.Error()
}

func codeSuffix(err error) string {
	if code := device.ErrorCode(err); code != 0 {
		return fmt.Sprintf(" [DPS error code %d]", code)
	}
	return ""
}
