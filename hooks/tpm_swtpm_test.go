package hooks_test

import (
	"bytes"
	"context"
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

	dpsdevice "github.com/dpsbroker/dpsbroker/clients/device"
	"github.com/dpsbroker/dpsbroker/clients/tpm"
	"github.com/dpsbroker/dpsbroker/provisioning"
)

const swtpmInstallHint = "apt-get install -y swtpm swtpm-tools"

// TestTPMSWTPM provisions swtpm (libtpms, a second TPM implementation)
// through the TCP transport: once by its individual enrollment, once by
// the EK certificate swtpm_setup made, under a TPM enrollment group keyed
// by the root of swtpm_setup's (test-private) local CA.
func TestTPMSWTPM(t *testing.T) {
	for _, tool := range []string{"swtpm", "swtpm_setup", "swtpm_localca"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found (%v): install it with %q", tool, err, swtpmInstallHint)
		}
	}
	dir := t.TempDir()
	addr := startSWTPM(t, manufactureSWTPM(t, dir))
	tr, err := tpm.OpenTCP(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	d, err := tpm.New(ctx, tr, tpm.Options{}) // the RSA EK swtpm_setup persisted
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()

	t.Run("individual", func(t *testing.T) {
		e := newEnv(t, fastPolls)
		e.enrollTPM(d.RegistrationID(), d.EndorsementKey(), provisioning.StatusEnabled)
		res, err := dpsdevice.Provision(ctx, e.deviceConfig(d))
		checkTPMAssigned(t, res, err, d.RegistrationID())
	})

	t.Run("group by the EK certificate's CA", func(t *testing.T) {
		e := newEnv(t, fastPolls)
		root := readPEMFile(t, filepath.Join(dir, "ca", "swtpm-localca-rootca-cert.pem"))
		issuer := readPEMFile(t, filepath.Join(dir, "ca", "issuercert.pem"))
		e.putTPMGroup("swtpm-fleet", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: root.Raw})), provisioning.StatusEnabled)
		ekCert, err := d.EKCertificate(ctx, tpm.RSAEKCertIndex)
		if err != nil {
			t.Fatal(err)
		}
		cfg := e.deviceConfig(d)
		cfg.EKCertificate = ekCert.Raw
		cfg.EKCertificateChain = [][]byte{issuer.Raw}
		res, err := dpsdevice.Provision(ctx, cfg)
		checkTPMAssigned(t, res, err, d.RegistrationID())
		rec, err := e.store.GetRegistration(ctx, d.RegistrationID())
		if err != nil || rec.EnrollmentGroupID != "swtpm-fleet" {
			t.Fatalf("record %+v %v", rec, err)
		}
		// Without the certificate there is no way in.
		cfg.EKCertificate, cfg.EKCertificateChain = nil, nil
		if _, err := dpsdevice.Provision(ctx, cfg); dpsdevice.ErrorCode(err) != 401002 {
			t.Fatalf("without EK certificate: %v", err)
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

func readPEMFile(t *testing.T, path string) *x509.Certificate {
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
