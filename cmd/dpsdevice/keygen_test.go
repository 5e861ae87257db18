package main

import (
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2/transport"

	"github.com/dpsbroker/dpsbroker/broker/brokertest"
	"github.com/dpsbroker/dpsbroker/clients/device"
	"github.com/dpsbroker/dpsbroker/clients/tpm/tpmsim"
	"github.com/dpsbroker/dpsbroker/provisioning/pkitest"
	"github.com/dpsbroker/dpsbroker/provisioning/wire"
)

// The simulator is one per process: these tests never run in parallel.

// useSimulator makes --tpm sim open what open returns, for this test.
func useSimulator(t *testing.T, open func() (transport.TPMCloser, error)) {
	t.Helper()
	prev := openSimulator
	openSimulator = open
	t.Cleanup(func() { openSimulator = prev })
}

// rebootingTPM is a device whose TPM is switched off after every run and
// comes back with the same seeds: primary keys (the SRK) survive, objects
// loaded in the last run do not.
func rebootingTPM(seed int64) func() (transport.TPMCloser, error) {
	return func() (transport.TPMCloser, error) { return tpmsim.OpenWithSeed(seed) }
}

// keptTPM is one simulated TPM that stays on across runs, so persistent
// handles stay too (the simulator's NV is wiped when it is reopened).
func keptTPM(t *testing.T) func() (transport.TPMCloser, error) {
	t.Helper()
	sim, err := tpmsim.Open()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sim.Close() })
	return func() (transport.TPMCloser, error) { return noClose{sim}, nil }
}

type noClose struct{ transport.TPM }

func (noClose) Close() error { return nil }

// signCSR is the enrollment group's CA issuing the device certificate for
// a CSR, as the factory PKI would; it returns the chain PEM.
func signCSR(t *testing.T, ca *pkitest.CA, csrFile string) []byte {
	t.Helper()
	data, err := os.ReadFile(csrFile)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(data)
	if blk == nil || blk.Type != "CERTIFICATE REQUEST" {
		t.Fatalf("%s is not a PEM CSR", csrFile)
	}
	csr, err := x509.ParseCertificateRequest(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if err := csr.CheckSignature(); err != nil {
		t.Fatalf("CSR signature: %v", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      csr.Subject,
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, csr.PublicKey, ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return pkitest.CertPEM(append([]*x509.Certificate{leaf}, ca.Chain...)...)
}

// TestX509TPMKey is the whole story of an X.509 device whose TLS key
// lives in the TPM: keygen -> CSR -> the group's CA signs it -> provision
// over mTLS with the key in the TPM -> assigned.
func TestX509TPMKey(t *testing.T) {
	b := brokertest.New(t)
	factory := b.EnrollGroup(t, "factory-tpm")
	ca := writeFile(t, t.TempDir(), "ca.pem", b.ServerCA.CertPEM())

	for _, tt := range []struct {
		name    string
		tpm     func(t *testing.T) func() (transport.TPMCloser, error)
		regID   string
		keepArg func(dir string) []string // keygen flags saying where the key is kept
		keyRef  func(dir string) string   // --tpm-key
	}{
		{
			name:    "key file, across a reboot",
			tpm:     func(*testing.T) func() (transport.TPMCloser, error) { return rebootingTPM(7) },
			regID:   "tpm-x509-blob",
			keepArg: func(dir string) []string { return []string{"--key-blob", filepath.Join(dir, "dev.tpmkey")} },
			keyRef:  func(dir string) string { return filepath.Join(dir, "dev.tpmkey") },
		},
		{
			name:    "persistent handle",
			tpm:     keptTPM,
			regID:   "tpm-x509-handle",
			keepArg: func(string) []string { return []string{"--persist-handle", "0x81000002"} },
			keyRef:  func(string) string { return "0x81000002" },
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			useSimulator(t, tt.tpm(t))
			dir := t.TempDir()
			csr := filepath.Join(dir, "dev.csr")
			r := runCLI(t, append([]string{"x509", "keygen", "--tpm", "sim", "--registration-id", tt.regID, "--csr", csr}, tt.keepArg(dir)...)...)
			if r.code != exitOK {
				t.Fatalf("keygen: exit %d\nstderr: %s", r.code, r.stderr)
			}
			if !strings.Contains(r.stdout, "never exported") || !strings.Contains(r.stdout, "--tpm-key "+tt.keyRef(dir)) {
				t.Errorf("keygen printed:\n%s", r.stdout)
			}
			chain := signCSR(t, factory, csr)
			cert := writeFile(t, dir, "dev.pem", chain)

			r = runCLI(t, "x509", "--tpm", "sim", "--tpm-key", tt.keyRef(dir), "--cert", cert, "--ca", ca,
				"--broker", b.MQTTAddr(), "--id-scope", b.IDScope())
			if r.code != exitOK {
				t.Fatalf("provision: exit %d\nstderr: %s", r.code, r.stderr)
			}
			var res wire.DeviceRegistrationResult
			if err := json.Unmarshal([]byte(r.stdout), &res); err != nil {
				t.Fatalf("stdout is not a registration state: %v\n%s", err, r.stdout)
			}
			certs, err := pkitest.ParseCertsPEM(chain)
			if err != nil {
				t.Fatal(err)
			}
			if res.Status != wire.StatusAssigned || res.DeviceID != tt.regID || res.X509 == nil ||
				res.X509.EnrollmentGroupID != "factory-tpm" || res.X509.CertificateInfo == nil ||
				res.X509.CertificateInfo.SHA256Thumbprint != wire.CertificateInfo(certs[0]).SHA256Thumbprint {
				t.Errorf("result = %+v", res)
			}
		})
	}
}

// listener counts the connections made to it: a key mismatch must stop
// dpsdevice before it dials.
func listener(t *testing.T) (addr string, accepted *atomic.Int32) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	accepted = new(atomic.Int32)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			c.Close()
		}
	}()
	return l.Addr().String(), accepted
}

// TestX509TPMKeyMismatch: a certificate issued for another key (here a
// software key with the same CN) is refused before connecting, naming
// both keys.
func TestX509TPMKeyMismatch(t *testing.T) {
	useSimulator(t, keptTPM(t))
	dir := t.TempDir()
	r := runCLI(t, "x509", "keygen", "--tpm", "sim", "--cn", "dev-mismatch", "--csr", filepath.Join(dir, "dev.csr"), "--persist-handle", "0x81000010")
	if r.code != exitOK {
		t.Fatalf("keygen: exit %d\nstderr: %s", r.code, r.stderr)
	}
	tpmKey := regexp.MustCompile(`sha256:[0-9a-f]{64}`).FindString(r.stdout)
	if tpmKey == "" {
		t.Fatalf("keygen printed no key fingerprint:\n%s", r.stdout)
	}
	other := pkitest.NewRoot(t).Leaf(t, "dev-mismatch")
	cert := writeFile(t, dir, "other.pem", other.ChainPEM())
	addr, accepted := listener(t)

	r = runCLI(t, "x509", "--tpm", "sim", "--tpm-key", "0x81000010", "--cert", cert, "--broker", addr, "--id-scope", "s", "-v")
	if r.code != exitError {
		t.Fatalf("exit %d, want %d\nstderr: %s", r.code, exitError, r.stderr)
	}
	for _, want := range []string{"is not a certificate for TPM key 0x81000010; not connecting", "does not belong to the certificate", tpmKey, device.KeyFingerprint(other.Cert.PublicKey)} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, r.stderr)
		}
	}
	if n := accepted.Load(); n != 0 || strings.Contains(r.stderr, "dialing") {
		t.Errorf("dpsdevice connected %d time(s) with a certificate that is not its key's:\n%s", n, r.stderr)
	}
}

// TestX509TPMKeyRefusals: what cannot work fails with a clear message and
// leaves no half-made key or CSR behind.
func TestX509TPMKeyRefusals(t *testing.T) {
	dir := t.TempDir()
	csr := filepath.Join(dir, "dev.csr")
	existing := writeFile(t, dir, "existing.tpmkey", []byte("a key we must not lose"))
	kg := func(extra ...string) []string {
		return append([]string{"x509", "keygen", "--tpm", "sim", "--cn", "dev-1", "--csr", csr}, extra...)
	}
	pv := func(extra ...string) []string {
		return append([]string{"x509", "--broker", "127.0.0.1:1", "--id-scope", "s", "--cert", "dev.pem"}, extra...)
	}
	for _, tt := range []struct {
		name   string
		args   []string
		code   int
		stderr string
	}{
		{"keygen help", []string{"x509", "keygen", "-h"}, exitOK, "--persist-handle"},
		{"x509 help names keygen", []string{"x509", "-h"}, exitOK, "--tpm-key"},
		{"keygen missing flags", []string{"x509", "keygen"}, exitUsage, "missing --registration-id, --csr"},
		{"keygen keeps the key nowhere", kg(), exitUsage, "exactly one of --persist-handle and --key-blob"},
		{"keygen keeps the key twice", kg("--persist-handle", "0x81000002", "--key-blob", "k"), exitUsage, "exactly one of"},
		{"keygen handle out of range", kg("--persist-handle", "0x81800000"), exitUsage, "not a persistent handle"},
		{"keygen handle not a number", kg("--persist-handle", "handle"), exitUsage, "not a persistent handle"},
		{"keygen bad SRK type", kg("--persist-handle", "0x81000002", "--srk-type", "dsa"), exitUsage, "--srk-type must be rsa or ecc"},
		{"keygen bad registration ID", []string{"x509", "keygen", "--cn", "dev 1", "--csr", csr, "--key-blob", "k"}, exitUsage, "--registration-id"},
		{"keygen never overwrites a key file", kg("--key-blob", existing), exitError, "never overwritten"},
		{"provision with --key and --tpm-key", pv("--key", "k", "--tpm-key", "0x81000002"), exitUsage, "exclude each other"},
		{"provision --tpm without --tpm-key", pv("--tpm", "sim"), exitUsage, "--tpm needs --tpm-key"},
		{"provision bad handle", pv("--tpm-key", "0x1"), exitUsage, "not a persistent handle"},
		{"provision key file missing", pv("--tpm", "sim", "--tpm-key", filepath.Join(dir, "nope.tpmkey")), exitError, "read TPM key"},
		{"provision key file not a key", pv("--tpm", "sim", "--tpm-key", existing), exitError, "DPSDEVICE TPM KEY"},
		{"provision nothing at the handle", pv("--tpm", "sim", "--tpm-key", "0x81000002"), exitError, "no key persisted at 0x81000002"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := runCLI(t, tt.args...)
			if r.code != tt.code || !strings.Contains(r.stderr, tt.stderr) {
				t.Errorf("exit %d (want %d)\nstderr: %s\nwant stderr ~ %q", r.code, tt.code, r.stderr, tt.stderr)
			}
			if _, err := os.Stat(csr); tt.code != exitOK && err == nil {
				t.Error("a CSR was written although keygen failed")
				os.Remove(csr)
			}
		})
	}
	if b, _ := os.ReadFile(existing); string(b) != "a key we must not lose" {
		t.Error("an existing key file was overwritten")
	}

	t.Run("occupied handle", func(t *testing.T) {
		useSimulator(t, keptTPM(t))
		if r := runCLI(t, kg("--persist-handle", "0x81000002")...); r.code != exitOK {
			t.Fatalf("first keygen: exit %d: %s", r.code, r.stderr)
		}
		os.Remove(csr)
		r := runCLI(t, kg("--persist-handle", "0x81000002")...)
		if r.code != exitError || !strings.Contains(r.stderr, "already in use") {
			t.Errorf("second keygen on the handle: exit %d: %s", r.code, r.stderr)
		}
		if _, err := os.Stat(csr); err == nil {
			t.Error("a CSR was left for a key that was not kept")
		}
	})

	t.Run("key file of another TPM", func(t *testing.T) {
		useSimulator(t, rebootingTPM(1))
		blob := filepath.Join(t.TempDir(), "dev.tpmkey")
		if r := runCLI(t, kg("--key-blob", blob)...); r.code != exitOK {
			t.Fatalf("keygen: exit %d: %s", r.code, r.stderr)
		}
		useSimulator(t, rebootingTPM(2))
		r := runCLI(t, pv("--tpm", "sim", "--tpm-key", blob)...)
		if r.code != exitError || !strings.Contains(r.stderr, "another storage root key") {
			t.Errorf("exit %d: %s", r.code, r.stderr)
		}
	})

	t.Run("tampered key file", func(t *testing.T) {
		useSimulator(t, rebootingTPM(3))
		blob := filepath.Join(t.TempDir(), "dev.tpmkey")
		if r := runCLI(t, kg("--key-blob", blob)...); r.code != exitOK {
			t.Fatalf("keygen: exit %d: %s", r.code, r.stderr)
		}
		data, err := os.ReadFile(blob)
		if err != nil {
			t.Fatal(err)
		}
		blk, _ := pem.Decode(data)
		blk.Bytes[len(blk.Bytes)-20] ^= 1 // in the SRK-wrapped private part
		writeFile(t, filepath.Dir(blob), "dev.tpmkey", pem.EncodeToMemory(blk))
		r := runCLI(t, pv("--tpm", "sim", "--tpm-key", blob)...)
		if r.code != exitError || !strings.Contains(r.stderr, "the TPM refuses the key") {
			t.Errorf("exit %d: %s", r.code, r.stderr)
		}
	})
}
