package main

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestDpsloadTogether starts two real dpsloads (each against its own
// baseline broker, so no dpsbroker is needed) through the start gate and
// checks that their measured runs overlap and that each counted the other
// as a peer rather than as noise.
func TestDpsloadTogether(t *testing.T) {
	b := benchWithDpsload(t)
	args := []string{"--baseline", "-c", "2", "--warmup", "200ms", "--duration", "1s", "--quiet"}
	paths, err := b.dpsloadTogether(context.Background(), []string{"a", "b"}, [][]string{args, args})
	if err != nil {
		t.Fatal(err)
	}
	type run struct {
		Started       time.Time `json:"started"`
		WindowSeconds float64   `json:"windowSeconds"`
		Completed     int64     `json:"completed"`
		Machine       struct {
			PeerCores float64 `json:"peerCores"`
		} `json:"machine"`
	}
	var runs []run
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		var f struct {
			Runs []run `json:"runs"`
		}
		if err := json.Unmarshal(data, &f); err != nil {
			t.Fatal(err)
		}
		if len(f.Runs) != 1 {
			t.Fatalf("%s: %d runs", p, len(f.Runs))
		}
		runs = append(runs, f.Runs[0])
	}
	for i, r := range runs {
		if r.Completed == 0 {
			t.Errorf("run %d completed nothing", i)
		}
		if r.Machine.PeerCores <= 0 {
			t.Errorf("run %d: peer CPU %v, want the other generator's", i, r.Machine.PeerCores)
		}
	}
	// Both began after both were ready: each started before the other's
	// run (1.2 s) could have ended.
	end := func(r run) time.Time { return r.Started.Add(1200 * time.Millisecond) }
	if runs[0].Started.After(end(runs[1])) || runs[1].Started.After(end(runs[0])) {
		t.Errorf("runs did not overlap: %v and %v", runs[0].Started, runs[1].Started)
	}
	if len(b.rep.commands) != 2 || !strings.Contains(b.rep.commands[0], "--start-file") {
		t.Errorf("commands %q", b.rep.commands)
	}
}

func TestDpsloadTogetherFailsFast(t *testing.T) {
	b := benchWithDpsload(t)
	good := []string{"--baseline", "-c", "1", "--duration", "1s", "--quiet"}
	bad := []string{"--baseline", "-c", "0", "--duration", "1s"} // invalid: exits at once
	_, err := b.dpsloadTogether(context.Background(), []string{"good", "bad"}, [][]string{good, bad})
	if err == nil || !strings.Contains(err.Error(), "ended before the start") {
		t.Fatalf("err = %v, want the early exit reported", err)
	}
}

// benchWithDpsload is a bench with a working directory and a freshly
// built dpsload, and nothing else.
func benchWithDpsload(t *testing.T) *bench {
	t.Helper()
	work := t.TempDir()
	b := &bench{work: work, bin: filepath.Join(work, "bin"), log: testWriter{t}, started: time.Now()}
	for _, d := range []string{"bin", "logs", "results"} {
		if err := os.MkdirAll(filepath.Join(work, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	build := exec.Command("go", "build", "-o", filepath.Join(b.bin, "dpsload"), "../dpsload")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return b
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
