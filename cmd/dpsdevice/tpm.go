package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/google/go-tpm/tpm2/transport"

	"github.com/dpsbroker/dpsbroker/clients/device"
	"github.com/dpsbroker/dpsbroker/clients/tpm"
	"github.com/dpsbroker/dpsbroker/clients/tpm/tpmsim"
	"github.com/dpsbroker/dpsbroker/provisioning"
)

// tpmFlags are the flags of "dpsdevice tpm".
type tpmFlags struct {
	connFlags
	tpmPath            string
	ekCert, ekChain    string
	ekType             string
	reconnect, persist bool

	keyType tpm.KeyType // parsed --key-type
}

func runTPM(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var f tpmFlags
	fs := newFlagSet("dpsdevice tpm", stderr)
	f.register(fs, "registration ID (default: base32 of SHA-256 of the EK, as the SDKs compute it)")
	fs.StringVar(&f.tpmPath, "tpm", tpm.DefaultDevicePath, tpmPathHelp)
	fs.StringVar(&f.ekCert, "ek-cert", "", "EK certificate for a TPM enrollment group: a PEM/DER file, or nv to read it from the TPM's NV index")
	fs.StringVar(&f.ekChain, "ek-chain", "", "PEM file: intermediates between the EK certificate and the manufacturer CA")
	fs.StringVar(&f.ekType, "key-type", "rsa", "EK and SRK type when they are not persisted: rsa or ecc")
	fs.BoolVar(&f.reconnect, "reconnect", false, "answer the challenge on a new connection with the SAS token as MQTT password")
	fs.BoolVar(&f.persist, "persist", false, "persist created EK/SRK and the imported key at the standard handles")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: dpsdevice tpm --broker HOST:PORT --id-scope SCOPE [--tpm sim|/dev/tpmrm0|tcp:HOST:PORT] [--ek-cert nv|FILE] [flags]")
		fs.PrintDefaults()
	}
	if code, ok := parseFlags(fs, args, f.check, stderr); !ok {
		return code
	}
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	d, closeTPM, err := openDevice(ctx, f.tpmPath, tpm.Options{EKType: f.keyType, SRKType: f.keyType, Persist: f.persist})
	if err != nil {
		fmt.Fprintf(stderr, "dpsdevice: %v\n", err)
		return exitError
	}
	defer closeTPM()
	cfg, err := f.config(ctx, d)
	if err != nil {
		fmt.Fprintf(stderr, "dpsdevice: %v\n", err)
		return exitError
	}
	return f.provision(ctx, cfg, "tpm", stdout, stderr)
}

func (f *tpmFlags) check(rest []string) error {
	if err := requireFlags(rest, [2]string{"--broker", f.broker}, [2]string{"--id-scope", f.idScope}, [2]string{"--tpm", f.tpmPath}); err != nil {
		return err
	}
	var err error
	if f.keyType, err = parseKeyType(f.ekType); err != nil {
		return fmt.Errorf("--key-type %w", err)
	}
	if f.ekChain != "" && f.ekCert == "" {
		return errors.New("--ek-chain needs --ek-cert")
	}
	return f.checkRun()
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
	cfg, err := f.connFlags.config()
	if err != nil {
		return device.Config{}, err
	}
	cfg.TPM, cfg.AnswerOnReconnect = d, f.reconnect
	switch f.ekCert {
	case "":
	case "nv":
		idx := tpm.RSAEKCertIndex
		if f.keyType == tpm.ECC {
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
	if bytes.Contains(b, []byte("-----BEGIN CERTIFICATE")) {
		return provisioning.ParseCertificatesPEM(b)
	}
	c, err := tpm.ParseEKCertificate(b)
	if err != nil {
		return nil, err
	}
	return []*x509.Certificate{c}, nil
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
