package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// A start gate lets a driver start several dpsload processes on the same
// instant, after each has finished its unmeasured preparation (minting,
// enrolling, --idle-wait): each creates its --ready-file, then waits for
// the --start-file the driver creates once all are ready. dpsbench uses it
// to load two brokers in the same window, so that whatever else the host
// does during that window hits both alike. The start file lists the pids of
// the gated generators, one per line: each counts the others' CPU as peer
// load rather than as the host's noise.
type gate struct {
	ready, start string
	timeout      time.Duration
	poll         time.Duration
}

// errGateTimeout is returned when the start file did not appear in time:
// the driver is gone or stuck, and a late start would break the pairing.
var errGateTimeout = errors.New("start gate: timed out waiting for the start file")

// errGateStartFile is returned for a start file that is not a pid list.
var errGateStartFile = errors.New("start gate: the start file must list pids, one per line")

// wait announces readiness and blocks until the start file exists; it
// returns the pids the start file lists, other than this process.
func (g gate) wait(ctx context.Context) ([]int, error) {
	if g.ready == "" && g.start == "" {
		return nil, nil
	}
	if g.ready != "" {
		if err := os.WriteFile(g.ready, []byte(fmt.Sprintln(os.Getpid())), 0o644); err != nil {
			return nil, fmt.Errorf("start gate: %w", err)
		}
	}
	if g.start == "" {
		return nil, nil
	}
	poll := g.poll
	if poll <= 0 {
		poll = 2 * time.Millisecond
	}
	deadline := time.Now().Add(g.timeout)
	for {
		if data, err := os.ReadFile(g.start); err == nil {
			return peerPIDs(data)
		} else if !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("start gate: %w", err)
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%w %s after %v", errGateTimeout, g.start, g.timeout)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(poll):
		}
	}
}

// peerPIDs parses the start file: one pid per line, this process's own
// left out.
func peerPIDs(data []byte) ([]int, error) {
	var pids []int
	for _, f := range strings.Fields(string(data)) {
		pid, err := strconv.Atoi(f)
		if err != nil || pid <= 0 {
			return nil, fmt.Errorf("%w: %q", errGateStartFile, f)
		}
		if pid != os.Getpid() {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}
