package main

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"

	"github.com/dpsbroker/dpsbroker/broker/brokertest"
)

// TestHoldSteady: with --steady the last level is held longer and read
// again, with the broker's Go memory and collection count from --metrics,
// the peak RSS while waiting, and per-connection figures against the
// reading with no connection.
func TestHoldSteady(t *testing.T) {
	b := brokertest.New(t)
	h, stdout := holdRun(t, b, "--levels", "4", "--steady", "200ms", "--metrics", b.HTTPURL()+"/metrics")
	s := h.Steady
	switch {
	case s == nil:
		t.Fatal("no steady point")
	case s.Connections != 4 || s.RSSBytes == 0 || s.HeapInuseBytes == 0 || s.StackInuseBytes == 0:
		t.Errorf("steady point %+v", *s)
	case h.SteadyPeakRSSBytes < s.RSSBytes:
		t.Errorf("peak RSS %d below the steady reading %d", h.SteadyPeakRSSBytes, s.RSSBytes)
	case s.GCCycles < h.Points[len(h.Points)-1].GCCycles:
		t.Errorf("collection count went back: %d after %d", s.GCCycles, h.Points[len(h.Points)-1].GCCycles)
	case h.SteadyBytesPerConnection == 0 || h.SteadyHeapBytesPerConnection == 0:
		t.Errorf("no steady per-connection figures: %+v", h)
	}
	if !strings.Contains(stdout, "hold: steady after 200ms") {
		t.Error("no steady summary line")
	}
}

func TestHoldSteadyUsage(t *testing.T) {
	var stderr bytes.Buffer
	args := []string{"hold", "--ca-file", "x", "--server-pid", "1", "--ca-cert", "a", "--ca-key", "b", "--steady", "-1s"}
	if code := run(context.Background(), args, io.Discard, &stderr, func(string) (string, bool) { return "", false }); code != exitUsage {
		t.Errorf("exit %d, want usage (%s)", code, stderr.String())
	}
}
