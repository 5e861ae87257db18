package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dpsbroker/dpsbroker/broker/brokertest"
	"github.com/dpsbroker/dpsbroker/provisioning/pkitest"
	"github.com/dpsbroker/dpsbroker/provisioning/wire"
)

// result is what one in-process run printed.
type result struct {
	code           int
	stdout, stderr string
}

func runCLI(t *testing.T, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	code := run(ctx, args, &stdout, &stderr)
	return result{code, stdout.String(), stderr.String()}
}

func writeFile(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// deviceFiles writes dev's chain, key and the broker's CA as PEM files.
func deviceFiles(t *testing.T, b *brokertest.Broker, dev *pkitest.Leaf) (cert, key, ca string) {
	t.Helper()
	dir := t.TempDir()
	return writeFile(t, dir, "dev.pem", dev.ChainPEM()), writeFile(t, dir, "dev.key", dev.KeyPEM()),
		writeFile(t, dir, "ca.pem", b.ServerCA.CertPEM())
}

func TestUsage(t *testing.T) {
	dir := t.TempDir()
	leaf := pkitest.NewRoot(t).Leaf(t, "dev-1")
	cert, key := writeFile(t, dir, "dev.pem", leaf.ChainPEM()), writeFile(t, dir, "dev.key", leaf.KeyPEM())
	base := []string{"x509", "--broker", "127.0.0.1:1", "--id-scope", "s", "--cert", cert, "--key", key}
	tests := []struct {
		name   string
		args   []string
		code   int
		stdout string // substring, "" for none
		stderr string
	}{
		{"no arguments", nil, exitUsage, "", "usage: dpsdevice"},
		{"help", []string{"help"}, exitOK, "x509", ""},
		{"unknown attestation", []string{"sas"}, exitUsage, "", `unknown attestation "sas"`},
		{"tpm help", []string{"tpm", "-h"}, exitOK, "", "--ek-cert"},
		{"tpm missing flags", []string{"tpm"}, exitUsage, "", "missing --broker, --id-scope"},
		{"tpm bad key type", []string{"tpm", "--broker", "h:1", "--id-scope", "s", "--key-type", "dsa"}, exitUsage, "", "--key-type must be rsa or ecc"},
		{"tpm chain without certificate", []string{"tpm", "--broker", "h:1", "--id-scope", "s", "--ek-chain", "x.pem"}, exitUsage, "", "--ek-chain needs --ek-cert"},
		{"tpm simulator, nothing listening", []string{"tpm", "--broker", "127.0.0.1:1", "--id-scope", "s", "--tpm", "sim", "--timeout", "5s"}, exitError, "", "dial 127.0.0.1:1"},
		{"x509 help", []string{"x509", "-h"}, exitOK, "", "--id-scope"},
		{"unknown flag", []string{"x509", "--nope"}, exitUsage, "", "flag provided but not defined"},
		{"missing flags", []string{"x509", "--broker", "h:1"}, exitUsage, "", "missing --id-scope, --cert"},
		{"extra argument", append(base, "extra"), exitUsage, "", `unexpected argument "extra"`},
		{"bad payload", append(base, "--payload", "{nope"), exitUsage, "", "--payload is not valid JSON"},
		{"bad timeout", append(base, "--timeout", "0s"), exitUsage, "", "--timeout must be positive"},
		{"registration ID is not the CN", append(base, "--registration-id", "dev-2"), exitUsage, "", "differs from the certificate CN"},
		{"missing certificate file", []string{"x509", "--broker", "h:1", "--id-scope", "s", "--cert", filepath.Join(dir, "nope.pem")},
			exitError, "", "read certificate"},
		{"CA file without certificates", append(base, "--ca", key), exitError, "", "no PEM CERTIFICATE"},
		{"nothing listening", base, exitError, "", "dial 127.0.0.1:1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := runCLI(t, tt.args...)
			if r.code != tt.code || !strings.Contains(r.stdout, tt.stdout) || !strings.Contains(r.stderr, tt.stderr) {
				t.Errorf("exit %d (want %d)\nstdout: %s\nstderr: %s\nwant stdout ~ %q, stderr ~ %q",
					r.code, tt.code, r.stdout, r.stderr, tt.stdout, tt.stderr)
			}
			if tt.code != exitOK && r.stdout != "" {
				t.Errorf("a failure printed on stdout: %s", r.stdout)
			}
		})
	}
}

func TestProvisionX509(t *testing.T) {
	b := brokertest.New(t)
	factory := b.EnrollGroup(t, "factory-a")
	dev := b.MintDevice(t, factory, "cli-device-1")
	cert, key, ca := deviceFiles(t, b, dev)

	r := runCLI(t, "x509", "--broker", b.MQTTAddr(), "--id-scope", b.IDScope(), "--cert", cert, "--key", key,
		"--ca", ca, "--payload", `{"a":1}`, "-v")
	if r.code != exitOK {
		t.Fatalf("exit %d\nstderr: %s", r.code, r.stderr)
	}
	var res wire.DeviceRegistrationResult
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil {
		t.Fatalf("stdout is not a registration state: %v\n%s", err, r.stdout)
	}
	if res.Status != wire.StatusAssigned || res.DeviceID != "cli-device-1" || res.AssignedHub == "" {
		t.Errorf("result = %+v", res)
	}
	if !strings.Contains(r.stdout, "\n  \"registrationId\"") {
		t.Errorf("stdout is not indented JSON:\n%s", r.stdout)
	}
	for _, step := range []string{"dialing", "sending CONNECT", "subscribed", "publishing request", "assigned", "disconnected"} {
		if !strings.Contains(r.stderr, step) {
			t.Errorf("-v log lacks %q:\n%s", step, r.stderr)
		}
	}
	if strings.Contains(r.stderr, "PRIVATE KEY") {
		t.Errorf("-v log shows key material:\n%s", r.stderr)
	}
}

func TestProvisionX509Refused(t *testing.T) {
	b := brokertest.New(t)
	off := b.EnrollGroup(t, "factory-off", brokertest.GroupDisabled())
	dev := b.MintDevice(t, off, "cli-device-2")
	cert, key, ca := deviceFiles(t, b, dev)

	r := runCLI(t, "x509", "--broker", b.MQTTAddr(), "--id-scope", b.IDScope(), "--cert", cert, "--key", key, "--ca", ca)
	if r.code != exitError {
		t.Fatalf("exit %d, want %d\nstderr: %s", r.code, exitError, r.stderr)
	}
	for _, want := range []string{"refused by the broker", "0x87", "DPS error code 401002"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr lacks %q: %s", want, r.stderr)
		}
	}
	if r.stdout != "" {
		t.Errorf("stdout: %s", r.stdout)
	}
}
