package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// syncBuffer is a bytes.Buffer safe for the broker's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func noEnv(string) (string, bool) { return "", false }

func TestUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want []string
	}{
		{"unknown command", []string{"frobnicate"}, nil, []string{`unknown command "frobnicate"`}},
		{"unknown flag", []string{"serve", "--bogus"}, nil, []string{"-bogus", "dpsbroker serve -h"}},
		{"every configuration problem at once", []string{"--id-scope", "a/b", "--max-packet-size", "5"},
			map[string]string{"DPSBROKER_MQTT_ADDR": "nope"},
			[]string{"mqtt-addr", "id-scope", "max-packet-size"}},
		{"missing config file", []string{"--config", "/nonexistent/dpsbroker.json"}, nil, []string{"config file"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb syncBuffer
			env := func(k string) (string, bool) { v, ok := tc.env[k]; return v, ok }
			if code := run(context.Background(), tc.args, &out, &errb, env); code != exitUsage {
				t.Fatalf("exit %d, want %d\n%s", code, exitUsage, errb.String())
			}
			for _, w := range tc.want {
				if !strings.Contains(errb.String(), w) {
					t.Errorf("stderr lacks %q:\n%s", w, errb.String())
				}
			}
		})
	}
}

func TestVersion(t *testing.T) {
	var out, errb syncBuffer
	if code := run(context.Background(), []string{"version"}, &out, &errb, noEnv); code != exitOK || !strings.HasPrefix(out.String(), "dpsbroker ") {
		t.Fatalf("exit %d, %q", code, out.String())
	}
}

// TestServeFirstRun: with nothing configured the broker creates the
// development PKI and a token file (0600), prints the provisioning recipe
// without the token, and stops cleanly on cancel.
func TestServeFirstRun(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errb syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"serve", "--data-dir", dir, "--mqtt-addr", "127.0.0.1:0", "--ws-addr", "127.0.0.1:0",
			"--admin-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--log-level", "warn"}, &out, &errb, noEnv)
	}()
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(errb.String(), "dpsdevice x509 --broker localhost:") {
		if time.Now().After(deadline) {
			t.Fatalf("no first-run instructions:\n%s", errb.String())
		}
		select {
		case code := <-done:
			t.Fatalf("serve exited %d:\n%s", code, errb.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	cancel()
	select {
	case code := <-done:
		if code != exitOK {
			t.Fatalf("exit %d:\n%s", code, errb.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("serve did not stop")
	}
	tokenFile := filepath.Join(dir, "admin-token")
	fi, err := os.Stat(tokenFile)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("token file mode %v", fi.Mode().Perm())
	}
	token, _ := os.ReadFile(tokenFile)
	if tok := strings.TrimSpace(string(token)); tok == "" || strings.Contains(errb.String(), tok) {
		t.Error("the admin token was printed (or is empty)")
	}
	for _, f := range []string{"pki/root.pem", "pki/server.pem", "pki/dev-device-1.pem", "dpsbroker.db"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Error(err)
		}
	}
	for _, w := range []string{"mosquitto_pub", "curl --cacert", `"dev-devices"`} {
		if !strings.Contains(errb.String(), w) {
			t.Errorf("instructions lack %q", w)
		}
	}
}

// TestDemo plays the seed story against an in-process broker.
func TestDemo(t *testing.T) {
	var out, errb syncBuffer
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if code := run(ctx, []string{"demo"}, &out, &errb, noEnv); code != exitOK {
		t.Fatalf("exit %d:\n%s\n%s", code, out.String(), errb.String())
	}
	stages := strings.Split(out.String(), "\n\n")
	if len(stages) != 5 {
		t.Fatalf("want a header and 4 stages:\n%s", out.String())
	}
	want := [][]string{
		{"no enrollment", "no enrollment", "no enrollment", "no enrollment", "no enrollment"},
		{"provisioned", "provisioned", "provisioned", "provisioned", "provisioned"},
		{"provisioned", "provisioned", "provisioned", "group disabled", "group disabled"},
		{"provisioned", "provisioned", "enrollment disabled", "group disabled", "group disabled"},
	}
	for i, st := range stages[1:] {
		lines := strings.Split(strings.TrimSpace(st), "\n")[1:]
		if len(lines) != 5 {
			t.Fatalf("stage %d: %q", i, st)
		}
		for j, l := range lines {
			if !strings.Contains(l, want[i][j]) {
				t.Errorf("stage %d, device %d: %q, want %q", i, j+1, l, want[i][j])
			}
		}
	}
}

// TestDeployExampleConfig keeps deploy/dpsbroker.example.json loadable and
// valid.
func TestDeployExampleConfig(t *testing.T) {
	var errb syncBuffer
	cfg, err := loadConfig("serve", []string{"--config", "../../deploy/dpsbroker.example.json"}, noEnv, &errb, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if cfg.IDScope != "0ne00000001" || len(cfg.Hubs) != 2 || cfg.LogFormat != "json" {
		t.Errorf("unexpected %+v", cfg)
	}
}
