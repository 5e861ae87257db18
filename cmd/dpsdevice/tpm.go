package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/google/go-tpm/tpm2/transport"

	"github.com/dpsbroker/dpsbroker/clients/device"
	"github.com/dpsbroker/dpsbroker/clients/tpm"
	"github.com/dpsbroker/dpsbroker/clients/tpm/tpmsim"
)

// tpmFlags are the flags of "dpsdevice tpm".
type tpmFlags struct {
	broker, idScope, registrationID string
	tpmPath, caFile, serverName     string
	ekCert, ekChain                 string
	ekType                          string
	payload                         string
	reconnect, persist, verbose     bool
	timeout                         time.Duration
}

func runTPM(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var f tpmFlags
	fs := flag.NewFlagSet("dpsdevice tpm", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&f.broker, "broker", "", "broker MQTT TLS address, host:port (required)")
	fs.StringVar(&f.idScope, "id-scope", "", "DPS ID scope (required)")
	fs.StringVar(&f.tpmPath, "tpm", tpm.DefaultDevicePath, "the TPM: a device path (/dev/tpmrm0), tcp:HOST:PORT (swtpm), or sim (in-process simulator, tests only)")
	fs.StringVar(&f.registrationID, "registration-id", "", "registration ID (default: base32 of SHA-256 of the EK, as the SDKs compute it)")
	fs.StringVar(&f.ekCert, "ek-cert", "", "EK certificate for a TPM enrollment group: a PEM/DER file, or nv to read it from the TPM's NV index")
	fs.StringVar(&f.ekChain, "ek-chain", "", "PEM file: intermediates between the EK certificate and the manufacturer CA")
	fs.StringVar(&f.ekType, "key-type", "rsa", "EK and SRK type when they are not persisted: rsa or ecc")
	fs.StringVar(&f.caFile, "ca", "", "PEM file: CA certificates that verify the broker (default: system roots)")
	fs.StringVar(&f.serverName, "server-name", "", "name to verify in the broker's certificate (default: the --broker host)")
	fs.StringVar(&f.payload, "payload", "", "custom JSON sent with the register request")
	fs.BoolVar(&f.reconnect, "reconnect", false, "answer the challenge on a new connection with the SAS token as MQTT password")
	fs.BoolVar(&f.persist, "persist", false, "persist created EK/SRK and the imported key at the standard handles")
	fs.DurationVar(&f.timeout, "timeout", 60*time.Second, "give up after this long")
	fs.BoolVar(&f.verbose, "v", false, "log each step to standard error")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: dpsdevice tpm --broker HOST:PORT --id-scope SCOPE [--tpm sim|/dev/tpmrm0|tcp:HOST:PORT] [--ek-cert nv|FILE] [flags]")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if err := f.check(fs.Args()); err != nil {
		fmt.Fprintf(stderr, "dpsdevice tpm: %v\n", err)
		fs.Usage()
		return exitUsage
	}
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	tr, err := openTPM(f.tpmPath)
	if err != nil {
		fmt.Fprintf(stderr, "dpsdevice: %v\n", err)
		return exitError
	}
	defer tr.Close()
	kt := tpm.RSA
	if f.ekType == "ecc" {
		kt = tpm.ECC
	}
	d, err := tpm.New(ctx, tr, tpm.Options{EKType: kt, SRKType: kt, Persist: f.persist})
	if err != nil {
		fmt.Fprintf(stderr, "dpsdevice: %v\n", err)
		return exitError
	}
	defer d.Close()
	cfg, err := f.config(ctx, d)
	if err != nil {
		fmt.Fprintf(stderr, "dpsdevice: %v\n", err)
		return exitError
	}
	if f.verbose {
		cfg.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return provisionAndPrint(ctx, cfg, "tpm", f.timeout, stdout, stderr)
}

func (f *tpmFlags) check(rest []string) error {
	var missing []string
	for _, m := range []struct{ name, v string }{{"--broker", f.broker}, {"--id-scope", f.idScope}, {"--tpm", f.tpmPath}} {
		if m.v == "" {
			missing = append(missing, m.name)
		}
	}
	switch {
	case len(missing) > 0:
		return fmt.Errorf("missing %s", strings.Join(missing, ", "))
	case len(rest) > 0:
		return fmt.Errorf("unexpected argument %q", rest[0])
	case f.ekType != "rsa" && f.ekType != "ecc":
		return fmt.Errorf("--key-type must be rsa or ecc, not %q", f.ekType)
	case f.ekChain != "" && f.ekCert == "":
		return errors.New("--ek-chain needs --ek-cert")
	case f.payload != "" && !json.Valid([]byte(f.payload)):
		return errors.New("--payload is not valid JSON")
	case f.timeout <= 0:
		return errors.New("--timeout must be positive")
	}
	return nil
}

// openSimulator opens --tpm sim. Tests replace it to keep one simulated
// TPM across runs (a device that keeps its TPM from keygen to provisioning).
var openSimulator = tpmsim.Open

// openTPM opens the TPM named by --tpm.
func openTPM(name string) (transport.TPMCloser, error) {
	switch {
	case name == "sim":
		return openSimulator()
	case strings.HasPrefix(name, "tcp:"):
		return tpm.OpenTCP(strings.TrimPrefix(name, "tcp:"))
	default:
		return tpm.OpenLinux(name)
	}
}

func (f *tpmFlags) config(ctx context.Context, d *tpm.Device) (device.Config, error) {
	tlsCfg, err := brokerTLS(f.caFile, f.serverName)
	if err != nil {
		return device.Config{}, err
	}
	cfg := device.Config{
		Broker:            f.broker,
		IDScope:           f.idScope,
		RegistrationID:    f.registrationID,
		TLSConfig:         tlsCfg,
		TPM:               d,
		AnswerOnReconnect: f.reconnect,
	}
	if f.payload != "" {
		cfg.Payload = json.RawMessage(f.payload)
	}
	switch f.ekCert {
	case "":
	case "nv":
		idx := tpm.RSAEKCertIndex
		if f.ekType == "ecc" {
			idx = tpm.ECCEKCertIndex
		}
		c, err := d.EKCertificate(ctx, idx)
		if err != nil {
			return device.Config{}, fmt.Errorf("read the EK certificate from NV %#x: %w", uint32(idx), err)
		}
		cfg.EKCertificate = c.Raw
	default:
		certs, err := readCertificates(f.ekCert)
		if err != nil || len(certs) == 0 {
			return device.Config{}, fmt.Errorf("--ek-cert %s: no certificate (%v)", f.ekCert, err)
		}
		cfg.EKCertificate = certs[0].Raw
		for _, c := range certs[1:] {
			cfg.EKCertificateChain = append(cfg.EKCertificateChain, c.Raw)
		}
	}
	if f.ekChain != "" {
		certs, err := readCertificates(f.ekChain)
		if err != nil {
			return device.Config{}, fmt.Errorf("--ek-chain: %w", err)
		}
		for _, c := range certs {
			cfg.EKCertificateChain = append(cfg.EKCertificateChain, c.Raw)
		}
	}
	return cfg, nil
}

// readCertificates reads PEM certificates, or one DER certificate (as NV
// dumps are).
func readCertificates(path string) ([]*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []*x509.Certificate
	for rest := b; ; {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		c, err := tpm.ParseEKCertificate(b)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

// brokerTLS is the TLS configuration that verifies the broker.
func brokerTLS(caFile, serverName string) (*tls.Config, error) {
	cfg := &tls.Config{ServerName: serverName, MinVersion: tls.VersionTLS12}
	if caFile == "" {
		return cfg, nil
	}
	b, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("read CA file: %w", err)
	}
	cfg.RootCAs = x509.NewCertPool()
	if !cfg.RootCAs.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("%s: no PEM CERTIFICATE block", caFile)
	}
	return cfg, nil
}
