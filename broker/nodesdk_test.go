package broker_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dpsbroker/dpsbroker/broker"
	"github.com/dpsbroker/dpsbroker/broker/brokertest"
)

// nodeSDKDir holds package.json, package-lock.json (the pinned SDK
// versions) and provision.js.
const nodeSDKDir = "testdata/nodesdk"

// nodeResult is what provision.js prints.
type nodeResult struct {
	OK          bool     `json:"ok"`
	Status      string   `json:"status"`
	AssignedHub string   `json:"assignedHub"`
	DeviceID    string   `json:"deviceId"`
	Error       string   `json:"error"`
	Name        string   `json:"name"`
	ElapsedMs   int      `json:"elapsedMs"`
	Statuses    []string `json:"statuses"`
}

// TestNodeSDK provisions X.509 devices with the official Azure IoT Node
// SDK from npm (azure-iot-provisioning-device-mqtt, versions pinned in
// testdata/nodesdk/package-lock.json) against the broker: with the
// default 202 + poll flow, with fast-path (the register answer is final),
// and a refused device. It needs node and npm (apt-get install -y nodejs
// npm) and, on the first run, the npm registry: npm ci installs into
// $XDG_CACHE_HOME/dpsbroker/nodesdk-<hash of the lock file> (os.UserCacheDir),
// reused by later runs until the lock file changes.
func TestNodeSDK(t *testing.T) {
	modules := nodeModules(t)
	for _, fast := range []bool{false, true} {
		name := "flow=202+poll"
		if fast {
			name = "flow=fast-path"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			b := brokertest.New(t, brokertest.WithConfig(func(c *broker.Config) { c.FastPath = fast }))
			group := b.EnrollGroup(t, "node-group")
			dev := b.MintDevice(t, group, "node-device-1")
			dir := t.TempDir()
			ca := writeTemp(t, dir, "server-ca.pem", b.ServerCA.CertPEM())
			cert := writeTemp(t, dir, "device.pem", dev.ChainPEM())
			key := writeTemp(t, dir, "device.key", dev.KeyPEM())

			res := runNodeProvision(t, modules, ca, b.MQTTAddr(), b.IDScope(), "node-device-1", cert, key)
			if !res.OK || res.Status != "assigned" || res.AssignedHub != "hub-1.example.net" || res.DeviceID != "node-device-1" {
				t.Fatalf("Node SDK result %+v", res)
			}
			// Which answers the SDK acted on: the default flow makes it
			// poll once (the register's 202 "assigning", then the poll's
			// 200 "assigned"); the fast path ends at the register.
			want := []string{"register:assigning", "poll:assigned"}
			if fast {
				want = []string{"register:assigned"}
			}
			if !slices.Equal(res.Statuses, want) {
				t.Fatalf("SDK went through %q, want %q (%+v)", res.Statuses, want, res)
			}
			t.Logf("Node SDK: %s in %d ms", name, res.ElapsedMs)

			// A device of a disabled group is refused at CONNECT; the SDK
			// reports an error (it does not retry "not authorized").
			b.DisableGroup(t, "node-group")
			refused := b.MintDevice(t, group, "node-device-2")
			rc := writeTemp(t, dir, "refused.pem", refused.ChainPEM())
			rk := writeTemp(t, dir, "refused.key", refused.KeyPEM())
			res = runNodeProvision(t, modules, ca, b.MQTTAddr(), b.IDScope(), "node-device-2", rc, rk)
			if res.OK || res.Error == "" || res.Name == "Timeout" {
				t.Fatalf("refused device: %+v, want an error from the SDK", res)
			}
			t.Logf("refused device: %s: %s", res.Name, res.Error)
		})
	}
}

func writeTemp(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// runNodeProvision runs provision.js with the installed modules, trusting
// only the test broker's server root in addition to Node's own CAs.
func runNodeProvision(t *testing.T, modules, caFile, addr, scope, regID, certFile, keyFile string) nodeResult {
	t.Helper()
	// localhost, not 127.0.0.1: the name the server certificate is for.
	_, port, _ := strings.Cut(addr, ":")
	script, err := filepath.Abs(filepath.Join(nodeSDKDir, "provision.js"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", script, "localhost:"+port, scope, regID, certFile, keyFile)
	cmd.Env = append(os.Environ(), "NODE_PATH="+modules, "NODE_EXTRA_CA_CERTS="+caFile)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("node provision.js: %v\nstdout: %s\nstderr: %s", err, stdout.Bytes(), stderr.Bytes())
	}
	var res nodeResult
	if err := json.Unmarshal(bytes.TrimSpace(stdout.Bytes()), &res); err != nil {
		t.Fatalf("provision.js output %q: %v\nstderr: %s", stdout.Bytes(), err, stderr.Bytes())
	}
	return res
}

// nodeModules returns a node_modules directory holding the locked SDK
// packages, running npm ci once per lock file into the user cache
// directory. Install scripts are not run (the SDK needs none).
func nodeModules(t *testing.T) string {
	t.Helper()
	for _, prog := range []string{"node", "npm"} {
		if _, err := exec.LookPath(prog); err != nil {
			t.Fatalf("%s not found: the Node SDK compatibility test needs Node.js and npm "+
				"(apt-get install -y nodejs npm, or go run ./cmd/dpstest, which installs them)", prog)
		}
	}
	lock, err := os.ReadFile(filepath.Join(nodeSDKDir, "package-lock.json"))
	if err != nil {
		t.Fatal(err)
	}
	pkg, err := os.ReadFile(filepath.Join(nodeSDKDir, "package.json"))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(append(append([]byte{}, pkg...), lock...))
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	dir := filepath.Join(cache, "dpsbroker", "nodesdk-"+hex.EncodeToString(sum[:8]))
	modules := filepath.Join(dir, "node_modules")
	if _, err := os.Stat(filepath.Join(dir, ".complete")); err == nil {
		return modules
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		t.Fatal(err)
	}
	// Install into a fresh directory and rename it into place, so that a
	// concurrent or interrupted run never sees half a node_modules.
	tmp, err := os.MkdirTemp(filepath.Dir(dir), "nodesdk-install-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(tmp)
	for name, data := range map[string][]byte{"package.json": pkg, "package-lock.json": lock} {
		if err := os.WriteFile(filepath.Join(tmp, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error")
	cmd.Dir = tmp
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("npm ci (needs the npm registry on the first run): %v\n%s", err, out)
	}
	if err := os.WriteFile(filepath.Join(tmp, ".complete"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		// Another run installed it first.
		if _, serr := os.Stat(filepath.Join(dir, ".complete")); serr != nil {
			t.Fatalf("install node modules: %v", errors.Join(err, serr))
		}
	}
	return modules
}
