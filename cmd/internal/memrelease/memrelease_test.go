//go:build unix

package memrelease

import (
	"context"
	"log/slog"
	"strings"
	"syscall"
	"testing"
	"time"
)

// lines receives each log record: slog's text handler writes a record in
// one Write.
type lines chan string

func (l lines) Write(p []byte) (int, error) {
	l <- string(p)
	return len(p), nil
}

// TestHandleReleasesOnSIGUSR1 sends this process SIGUSR1 and waits for
// the release's log line: the signal is handled (not the default action,
// which would kill the test binary) and the figures are reported.
func TestHandleReleasesOnSIGUSR1(t *testing.T) {
	out := make(lines, 4)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	Handle(ctx, slog.New(slog.NewTextHandler(out, nil)))
	if err := syscall.Kill(syscall.Getpid(), syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	var line string
	select {
	case line = <-out:
	case <-time.After(30 * time.Second):
		t.Fatal("no release logged")
	}
	for _, want := range []string{"memory released", "heap_inuse_bytes=", "stack_inuse_bytes=", "collections="} {
		if !strings.Contains(line, want) {
			t.Errorf("log lacks %s: %q", want, line)
		}
	}
}

// junk is garbage for TestReleaseReturnsPages: package-level, so the
// compiler cannot drop the allocations.
var junk [][]byte

func TestReleaseReturnsPages(t *testing.T) {
	// Garbage the release must collect and hand back.
	for range 64 {
		junk = append(junk, make([]byte, 64<<10))
	}
	junk = nil
	s := Release()
	if s.Collections < 2 || s.HeapReleased == 0 || s.HeapInuse == 0 {
		t.Fatalf("release %+v: want at least two collections and released pages", s)
	}
}
