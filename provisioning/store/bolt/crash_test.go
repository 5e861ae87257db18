package bolt

import (
	"bufio"
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// crashHelperEnv makes the test binary the process that is killed
// (TestCrashHelper): it commits registrations from several goroutines and
// prints each one as soon as its commit returned.
const crashHelperEnv = "DPSBROKER_BOLT_CRASH_HELPER"

// TestKilledProcessKeepsAcknowledged kills (SIGKILL) a process in the
// middle of committing registrations, more than one journal cycle in, and
// checks after reopening its store that every registration it had
// acknowledged is there, with the etag and the operation it was
// acknowledged with: the journal's promise across a real process death.
func TestKilledProcessKeepsAcknowledged(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dps.db")
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashHelper$")
	cmd.Env = append(os.Environ(), crashHelperEnv+"="+path)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	type ack struct{ id, etag, opID string }
	var acks []ack
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 4 || f[0] != "ack" {
			continue
		}
		acks = append(acks, ack{f[1], f[2], f[3]})
		if len(acks) == applyEntries+applyEntries/2 {
			_ = cmd.Process.Signal(syscall.SIGKILL)
			break
		}
	}
	_ = cmd.Wait()
	if len(acks) < applyEntries+applyEntries/2 {
		t.Fatalf("the helper acknowledged only %d registrations before it ended", len(acks))
	}
	ctx := context.Background()
	s := openTest(t, path, Options{})
	latest := map[string]ack{}
	for _, a := range acks {
		latest[a.id] = a
		op, err := s.GetOperation(ctx, a.opID)
		if err != nil || op.Result == nil || op.Result.ETag != a.etag {
			t.Errorf("operation %s of %s after the kill: %+v, %v", a.opID, a.id, op, err)
		}
	}
	for id, a := range latest {
		rec, err := s.GetRegistration(ctx, id)
		if err != nil {
			t.Errorf("registration %s acknowledged with etag %s is gone: %v", id, a.etag, err)
			continue
		}
		// A later commit of the same device may have been written but not
		// yet acknowledged when the process died: its record may win, an
		// older one never.
		if etagSeq(t, rec.ETag) < etagSeq(t, a.etag) {
			t.Errorf("registration %s: etag %s is older than the acknowledged %s", id, rec.ETag, a.etag)
		}
	}
	t.Logf("%d acknowledged commits of %d devices checked after SIGKILL", len(acks), len(latest))
}

// etagSeq is the sequence number an etag of this store encodes (etagFor).
func etagSeq(t *testing.T, etag string) uint64 {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(etag)
	if err != nil || len(b) > 8 {
		t.Fatalf("etag %q: %v", etag, err)
	}
	var n uint64
	for _, c := range b {
		n = n<<8 | uint64(c)
	}
	return n
}

// TestCrashHelper is the process TestKilledProcessKeepsAcknowledged kills.
func TestCrashHelper(t *testing.T) {
	path := os.Getenv(crashHelperEnv)
	if path == "" {
		t.Skip("helper process of TestKilledProcessKeepsAcknowledged")
	}
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	out := bufio.NewWriter(os.Stdout)
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := 0; ; i++ {
				c := journalCommit(t, fmt.Sprintf("w%d-dev-%03d", w, i%20), "g", fmt.Sprint("hub-", i))
				rec, _, err := s.CommitRegistration(context.Background(), c)
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				fmt.Fprintf(out, "ack %s %s %s\n", c.Record.RegistrationID, rec.ETag, c.Operation.OperationID)
				_ = out.Flush()
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	time.Sleep(time.Minute) // killed before this
}
