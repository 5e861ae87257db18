package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

func TestGateWaitsForStartFile(t *testing.T) {
	dir := t.TempDir()
	g := gate{ready: filepath.Join(dir, "ready"), start: filepath.Join(dir, "start"), timeout: time.Minute, poll: time.Millisecond}
	type result struct {
		peers []int
		err   error
	}
	done := make(chan result, 1)
	go func() {
		peers, err := g.wait(context.Background())
		done <- result{peers, err}
	}()

	// Ready is announced first, and the run does not begin before the
	// start file exists.
	for {
		if _, err := os.Stat(g.ready); err == nil {
			break
		}
		select {
		case r := <-done:
			t.Fatalf("wait returned before the ready file existed: %v", r.err)
		case <-time.After(time.Millisecond):
		}
	}
	select {
	case r := <-done:
		t.Fatalf("wait returned without a start file: %v", r.err)
	case <-time.After(50 * time.Millisecond):
	}
	// The driver lists every gated generator; this one leaves itself out.
	start := fmt.Sprintf("%d\n4242\n", os.Getpid())
	if err := os.WriteFile(g.start, []byte(start), 0o644); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err != nil || !slices.Equal(r.peers, []int{4242}) {
		t.Fatalf("wait = %v, %v; want [4242], nil", r.peers, r.err)
	}
}

func TestGateErrors(t *testing.T) {
	dir := t.TempDir()
	badStart := filepath.Join(dir, "bad-start")
	if err := os.WriteFile(badStart, []byte("123\nnot-a-pid\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		g    gate
		ctx  func() context.Context
		want error
	}{
		{"no gate", gate{}, context.Background, nil},
		{"ready only", gate{ready: filepath.Join(dir, "r1")}, context.Background, nil},
		{"start never created", gate{start: filepath.Join(dir, "never"), timeout: 20 * time.Millisecond, poll: time.Millisecond}, context.Background, errGateTimeout},
		{"cancelled", gate{start: filepath.Join(dir, "never"), timeout: time.Minute}, func() context.Context {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			return ctx
		}, context.Canceled},
		{"ready file not writable", gate{ready: filepath.Join(dir, "missing-dir", "r")}, context.Background, os.ErrNotExist},
		{"start file not pids", gate{start: badStart, timeout: time.Minute}, context.Background, errGateStartFile},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.g.wait(tt.ctx())
			if tt.want == nil && err != nil || tt.want != nil && !errors.Is(err, tt.want) {
				t.Fatalf("wait = %v, want %v", err, tt.want)
			}
		})
	}
}
