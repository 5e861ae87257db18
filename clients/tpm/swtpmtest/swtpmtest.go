// Package swtpmtest runs a real swtpm (libtpms, a second TPM 2.0
// implementation beside the go-tpm-tools simulator) for tests, reached over
// TCP with tpm.OpenTCP (or directly as a tpm.Device with TPM.Device).
//
// Each TPM is manufactured by swtpm_setup with a private --config, so its
// swtpm-localca lives in the test's temporary directory instead of the
// system-wide /var/lib/swtpm-localca: tests stay hermetic and can run in
// parallel. Tests fail (never skip) when the tools are missing.
package swtpmtest

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dpsbroker/dpsbroker/clients/tpm"
)

// InstallHint is the message a test fails with when a swtpm tool is missing.
const InstallHint = "apt-get install -y swtpm swtpm-tools"

// tools are the programs Start needs.
var tools = []string{"swtpm", "swtpm_setup", "swtpm_localca"}

const (
	// startAttempts bounds the retries when the port pair picked was taken
	// before swtpm bound it.
	startAttempts = 5
	readyTimeout  = 10 * time.Second
)

// Options says how Start manufactures the TPM.
type Options struct {
	// EKCertificates has swtpm_setup write an RSA EK certificate (NV
	// 0x01c00002), an ECC P-384 EK certificate (0x01c00016) and a platform
	// certificate, all issued by the test-private local CA that LocalCA
	// returns. Without it the TPM has its EKs but no certificates.
	EKCertificates bool
}

// TPM is one running swtpm. Its EKs are persisted by swtpm_setup (the RSA
// EK at 0x81010001), so tpm.New finds them.
type TPM struct {
	// Addr is the command port, "127.0.0.1:port", for tpm.OpenTCP. The
	// control port is port+1.
	Addr string

	ca   string // the local CA's state directory, "" without EK certificates
	proc *process
}

// process is one run of swtpm.
type process struct {
	cmd  *exec.Cmd
	out  *lockedBuffer
	done chan struct{} // closed when the process has exited
}

// Start manufactures a TPM in a temporary directory, starts swtpm on two
// adjacent free loopback ports and kills it (by its PID) when the test
// ends. It fails the test, never skips, when swtpm or swtpm-tools is not
// installed.
func Start(tb testing.TB, opts Options) *TPM {
	tb.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			tb.Fatalf("swtpmtest: %s not found (%v): install it with %q", tool, err, InstallHint)
		}
	}
	dir := tb.TempDir()
	state, err := manufacture(dir, opts)
	if err != nil {
		tb.Fatalf("swtpmtest: %v", err)
	}
	t := &TPM{}
	if opts.EKCertificates {
		t.ca = filepath.Join(dir, "ca")
	}
	var lastErr error
	for range startAttempts {
		port, err := adjacentFreePorts()
		if err != nil {
			tb.Fatalf("swtpmtest: %v", err)
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		p, err := launch(state, port, addr)
		if err == nil {
			t.Addr, t.proc = addr, p
			tb.Cleanup(t.stop)
			return t
		}
		lastErr = err
	}
	tb.Fatalf("swtpmtest: start swtpm after %d attempts: %v", startAttempts, lastErr)
	return nil
}

// LocalCA returns the root and the issuing certificate of the local CA that
// signed the EK certificates. It fails the test when the TPM was started
// without Options.EKCertificates.
func (t *TPM) LocalCA(tb testing.TB) (root, issuer *x509.Certificate) {
	tb.Helper()
	if t.ca == "" {
		tb.Fatal("swtpmtest: LocalCA of a TPM started without EKCertificates")
	}
	return readPEMCert(tb, filepath.Join(t.ca, "swtpm-localca-rootca-cert.pem")),
		readPEMCert(tb, filepath.Join(t.ca, "issuercert.pem"))
}

// Device opens the TPM over TCP and returns a tpm.Device on it; both are
// closed when the test ends. With the zero Options the Device uses the RSA
// EK that swtpm_setup persisted at 0x81010001.
func (t *TPM) Device(tb testing.TB, opts tpm.Options) *tpm.Device {
	tb.Helper()
	tr, err := tpm.OpenTCP(t.Addr)
	if err != nil {
		tb.Fatalf("swtpmtest: %v", err)
	}
	d, err := tpm.New(tb.Context(), tr, opts)
	if err != nil {
		tr.Close()
		tb.Fatalf("swtpmtest: %v", err)
	}
	tb.Cleanup(func() {
		d.Close()
		tr.Close()
	})
	return d
}

func (t *TPM) stop() {
	_ = t.proc.cmd.Process.Kill()
	<-t.proc.done
}

// manufacture runs swtpm_setup with a private configuration, so that the CA
// is created in dir/ca rather than the system-wide /var/lib/swtpm-localca,
// and returns the state directory.
func manufacture(dir string, opts Options) (string, error) {
	state, ca := filepath.Join(dir, "state"), filepath.Join(dir, "ca")
	for _, d := range []string{state, ca} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return "", err
		}
	}
	localca, err := exec.LookPath("swtpm_localca")
	if err != nil {
		return "", err
	}
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
			return "", err
		}
	}
	args := []string{"--tpm2", "--tpmstate", state, "--config", filepath.Join(dir, "setup.conf"), "--overwrite"}
	if opts.EKCertificates {
		args = append(args, "--create-ek-cert", "--create-platform-cert", "--lock-nvram")
	} else {
		args = append(args, "--createek")
	}
	out, err := exec.Command("swtpm_setup", args...).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("swtpm_setup: %w\n%s", err, out)
	}
	return state, nil
}

// launch starts swtpm on port (commands) and port+1 (control) and waits
// until the command port accepts connections.
func launch(state string, port int, addr string) (*process, error) {
	out := &lockedBuffer{}
	cmd := exec.Command("swtpm", "socket", "--tpm2",
		"--tpmstate", "dir="+state,
		"--server", fmt.Sprintf("type=tcp,port=%d,bindaddr=127.0.0.1", port),
		"--ctrl", fmt.Sprintf("type=tcp,port=%d,bindaddr=127.0.0.1", port+1),
		// swtpm's control port is not an MS platform port, so nobody can
		// power it on and start it up: let it do both itself.
		"--flags", "not-need-init,startup-clear")
	cmd.Stdout, cmd.Stderr = out, out
	// Kill swtpm when the test process dies, even if the cleanup never
	// runs (a panicking test).
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	p := &process{cmd: cmd, out: out, done: make(chan struct{})}

	started := make(chan error, 1)
	go func() {
		// Pdeathsig fires when the *thread* that forked the child exits:
		// keep this goroutine on its own thread for the child's whole life.
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			close(p.done)
			return
		}
		started <- nil
		_ = cmd.Wait()
		close(p.done)
	}()
	if err := <-started; err != nil {
		return nil, fmt.Errorf("start swtpm: %w", err)
	}

	deadline := time.Now().Add(readyTimeout)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return p, nil
		}
		select {
		case <-p.done:
			return nil, fmt.Errorf("swtpm on %s exited early: %s", addr, strings.TrimSpace(out.String()))
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			<-p.done
			return nil, fmt.Errorf("swtpm did not listen on %s after %v: %w; output: %s", addr, readyTimeout, err, strings.TrimSpace(out.String()))
		}
	}
}

// adjacentFreePorts finds p such that p and p+1 are both free on 127.0.0.1
// right now.
func adjacentFreePorts() (int, error) {
	for range 50 {
		l1, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		p := l1.Addr().(*net.TCPAddr).Port
		l2, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p+1)))
		l1.Close()
		if err == nil {
			l2.Close()
			return p, nil
		}
	}
	return 0, errors.New("no two adjacent free loopback ports")
}

func readPEMCert(tb testing.TB, path string) *x509.Certificate {
	tb.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		tb.Fatalf("swtpmtest: %s: no PEM block", path)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

// lockedBuffer collects swtpm's output, written by exec's copying goroutine
// and read by the test when swtpm fails.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
