// Command dpstest runs dpsbroker's whole test suite the way CI does:
//
//	go run ./cmd/dpstest
//
// It first makes sure the system programs the tests start for real are
// installed (redis-server, swtpm, tpm2-tools, mosquitto clients, Node.js and
// npm), installing them with apt-get when it runs as root on Debian, then
// checks formatting, runs go vet, staticcheck (pinned in go.mod as a tool),
// go test -race over every package, and the stack-size test again without
// -race (the race detector inflates frames). Extra arguments go to go test, e.g.
//
//	go run ./cmd/dpstest -run TestSeed ./provisioning/...
//
// The tests never skip because a dependency is missing: they fail with an
// install hint instead, and this command is what installs it.
package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"
)

// requirement is a program the tests run (or a file a cgo build needs),
// and the Debian package that brings it.
type requirement struct {
	program string // looked up in PATH; or, when it starts with "/", a file that must exist
	pkg     string
}

// present reports whether r is installed.
func (r requirement) present() bool {
	if strings.HasPrefix(r.program, "/") {
		_, err := os.Stat(r.program)
		return err == nil
	}
	_, err := exec.LookPath(r.program)
	return err == nil
}

var requirements = []requirement{
	{"redis-server", "redis-server"},
	{"swtpm", "swtpm"},
	{"swtpm_setup", "swtpm-tools"},
	{"tpm2_getrandom", "tpm2-tools"},
	{"mosquitto_sub", "mosquitto-clients"},
	// The Node SDK compatibility test (broker/nodesdk_test.go) runs the
	// official Azure IoT Node SDK, installed from npm on first use.
	{"node", "nodejs"},
	{"npm", "npm"},
	// The go-tpm-tools TPM simulator is C code built with cgo and linked
	// against OpenSSL's libcrypto.
	{"gcc", "gcc"},
	{"/usr/include/openssl/evp.h", "libssl-dev"},
}

func main() {
	start := time.Now()
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "dpstest: %v (after %s)\n", err, time.Since(start).Round(time.Second))
		os.Exit(1)
	}
	fmt.Printf("dpstest: all checks passed in %s\n", time.Since(start).Round(time.Second))
}

func run(args []string) error {
	if err := ensurePrograms(); err != nil {
		return err
	}
	step("gofmt")
	out, err := exec.Command("gofmt", "-l", ".").Output()
	if err != nil {
		return fmt.Errorf("gofmt: %w", err)
	}
	if files := strings.TrimSpace(string(out)); files != "" {
		return fmt.Errorf("gofmt would change these files (run gofmt -w):\n%s", files)
	}
	if err := sh("go", "vet", "./..."); err != nil {
		return err
	}
	if err := sh("go", "tool", "staticcheck", "./..."); err != nil {
		return err
	}
	testArgs := []string{"test", "-race", "-count=1", "-timeout=15m"}
	if len(args) > 0 {
		return sh("go", append(testArgs, args...)...)
	}
	if err := sh("go", append(testArgs, "./...")...); err != nil {
		return err
	}
	// Tests of stack sizes, which the race detector inflates: they skip
	// under -race and run here in a normal build.
	return sh("go", "test", "-count=1", "-run", "^TestIdleConnectionStacks$", "./broker/")
}

// ensurePrograms installs the missing system packages with apt-get when it
// can, and otherwise says exactly what to install.
func ensurePrograms() error {
	step("system packages")
	var missing []string
	for _, r := range requirements {
		if !r.present() {
			missing = append(missing, r.pkg)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	hint := "apt-get install -y " + strings.Join(missing, " ")
	if os.Geteuid() != 0 {
		return fmt.Errorf("missing system packages; run as root or install them: sudo %s", hint)
	}
	if _, err := exec.LookPath("apt-get"); err != nil {
		return fmt.Errorf("missing system packages and no apt-get here; install the equivalents of: %s", strings.Join(missing, " "))
	}
	env := append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	if err := shEnv(env, "apt-get", "update", "-qq"); err != nil {
		return err
	}
	if err := shEnv(env, "apt-get", append([]string{"install", "-y", "-qq", "--no-install-recommends"}, missing...)...); err != nil {
		return err
	}
	for _, r := range requirements {
		if !r.present() {
			return fmt.Errorf("%s is still missing after installing %s", r.program, r.pkg)
		}
	}
	return nil
}

func step(name string) { fmt.Printf("==> %s\n", name) }

func sh(name string, args ...string) error { return shEnv(nil, name, args...) }

func shEnv(env []string, name string, args ...string) error {
	step(name + " " + strings.Join(args, " "))
	cmd := exec.Command(name, args...)
	cmd.Env = env
	cmd.Stdout = os.Stdout
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return fmt.Errorf("%s %s failed with exit code %d", name, strings.Join(args, " "), ee.ExitCode())
		}
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}
