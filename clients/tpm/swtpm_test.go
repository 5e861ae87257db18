package tpm_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"

	"github.com/dpsbroker/dpsbroker/clients/tpm"
	"github.com/dpsbroker/dpsbroker/provisioning/sas"
	"github.com/dpsbroker/dpsbroker/provisioning/tpmattest"
)

const swtpmInstallHint = "apt-get install -y swtpm swtpm-tools"

// TestSWTPM runs the whole flow against swtpm, a second TPM implementation
// (libtpms) reached over TCP, and checks the EK certificate swtpm_setup
// wrote against the test's own local CA.
func TestSWTPM(t *testing.T) {
	for _, tool := range []string{"swtpm", "swtpm_setup", "swtpm_localca"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found (%v): install it with %q", tool, err, swtpmInstallHint)
		}
	}
	dir := t.TempDir()
	state := manufactureSWTPM(t, dir)
	addr := startSWTPM(t, state)

	tr, err := tpm.OpenTCP(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	ctx := context.Background()
	// swtpm_setup persisted its RSA EK at 0x81010001; the Device uses it.
	d, err := tpm.New(ctx, tr, tpm.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()

	t.Run("challenge", func(t *testing.T) {
		ch := challenge(t, d.EndorsementKey(), d.StorageRootKey())
		if err := d.ActivateAndImport(ctx, ch.AuthenticationKey); err != nil {
			t.Fatalf("ActivateAndImport: %v", err)
		}
		now := time.Now()
		token, err := d.SignSAS(ctx, sas.Resource(idScope, d.RegistrationID()), now.Add(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		if err := tpmattest.VerifySAS(token, ch.Key, idScope, d.RegistrationID(), now); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("ek certificate", func(t *testing.T) {
		roots, inter := x509.NewCertPool(), x509.NewCertPool()
		roots.AddCert(readPEMCert(t, filepath.Join(dir, "ca", "swtpm-localca-rootca-cert.pem")))
		inter.AddCert(readPEMCert(t, filepath.Join(dir, "ca", "issuercert.pem")))
		ek, err := tpmattest.ParseEK(d.EndorsementKey())
		if err != nil {
			t.Fatal(err)
		}
		ekPub, err := tpm2.Pub(*ek.Public)
		if err != nil {
			t.Fatal(err)
		}
		for _, tt := range []struct {
			name  string
			index tpm2.TPMHandle
		}{
			{"rsa", tpm.RSAEKCertIndex},
			{"ecc p-384", tpm.ECCP384EKCertIndex},
		} {
			t.Run(tt.name, func(t *testing.T) {
				cert, err := d.EKCertificate(ctx, tt.index)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := cert.Verify(x509.VerifyOptions{
					Roots:         roots,
					Intermediates: inter,
					KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
				}); err != nil {
					t.Fatalf("EK certificate does not verify against the local CA: %v", err)
				}
				if tt.index == tpm.RSAEKCertIndex {
					if eq, ok := cert.PublicKey.(interface{ Equal(crypto.PublicKey) bool }); !ok || !eq.Equal(ekPub) {
						t.Error("RSA EK certificate does not certify the EK the device sends")
					}
				}
			})
		}
	})
}

// manufactureSWTPM runs swtpm_setup with a private configuration, so that
// the CA is created in dir/ca rather than the system-wide
// /var/lib/swtpm-localca, and returns the state directory.
func manufactureSWTPM(t *testing.T, dir string) string {
	t.Helper()
	state, ca := filepath.Join(dir, "state"), filepath.Join(dir, "ca")
	for _, d := range []string{state, ca} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	localca, _ := exec.LookPath("swtpm_localca")
	files := map[string]string{
		"setup.conf": "create_certs_tool = " + localca + "\n" +
			"create_certs_tool_config = " + filepath.Join(dir, "localca.conf") + "\n" +
			"create_certs_tool_options = " + filepath.Join(dir, "localca.options") + "\n" +
			"active_pcr_banks = sha256\n",
		"localca.conf": "statedir = " + ca + "\n" +
			"signingkey = " + filepath.Join(ca, "signkey.pem") + "\n" +
			"issuercert = " + filepath.Join(ca, "issuercert.pem") + "\n" +
			"certserial = " + filepath.Join(ca, "certserial") + "\n",
		"localca.options": "--platform-manufacturer dpsbroker\n--platform-version 2.1\n--platform-model test\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	out, err := exec.Command("swtpm_setup", "--tpm2", "--tpmstate", state, "--config", filepath.Join(dir, "setup.conf"),
		"--create-ek-cert", "--create-platform-cert", "--lock-nvram", "--overwrite").CombinedOutput()
	if err != nil {
		t.Fatalf("swtpm_setup: %v\n%s", err, out)
	}
	return state
}

// startSWTPM starts swtpm on two adjacent free loopback ports (the
// control port is port+1) and returns the command address. The process is
// killed by its PID at cleanup.
func startSWTPM(t *testing.T, state string) string {
	t.Helper()
	port := adjacentFreePorts(t)
	var stderr bytes.Buffer
	cmd := exec.Command("swtpm", "socket", "--tpm2",
		"--tpmstate", "dir="+state,
		"--server", fmt.Sprintf("type=tcp,port=%d,bindaddr=127.0.0.1", port),
		"--ctrl", fmt.Sprintf("type=tcp,port=%d,bindaddr=127.0.0.1", port+1),
		"--flags", "not-need-init,startup-clear")
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start swtpm: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return addr
		}
		select {
		case err := <-exited:
			t.Fatalf("swtpm exited: %v\n%s", err, stderr.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("swtpm did not listen on %s: %v\n%s", addr, err, stderr.String())
		}
	}
}

// adjacentFreePorts finds p such that p and p+1 are both free on 127.0.0.1
// right now.
func adjacentFreePorts(t *testing.T) int {
	t.Helper()
	for range 50 {
		l1, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		p := l1.Addr().(*net.TCPAddr).Port
		l2, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p+1)))
		l1.Close()
		if err == nil {
			l2.Close()
			return p
		}
	}
	t.Fatal("no two adjacent free loopback ports")
	return 0
}

func readPEMCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("%s: no PEM block", path)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
