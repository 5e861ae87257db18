//go:build unix

package memrelease

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

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

// TestHandleReleasesOnSIGUSR1 sends this process SIGUSR1 and waits for
// the release's log line: the signal is handled (not the default action,
// which would kill the test binary) and the figures are reported.
func TestHandleReleasesOnSIGUSR1(t *testing.T) {
	var out lockedBuffer
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	Handle(ctx, slog.New(slog.NewTextHandler(&out, nil)))
	if err := syscall.Kill(syscall.Getpid(), syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(out.String(), "memory released") {
		if time.Now().After(deadline) {
			t.Fatalf("no release logged; log: %q", out.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, key := range []string{"heap_inuse_bytes=", "stack_inuse_bytes=", "collections="} {
		if !strings.Contains(out.String(), key) {
			t.Errorf("log lacks %s: %q", key, out.String())
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
