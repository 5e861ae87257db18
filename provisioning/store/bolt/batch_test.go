package bolt

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/dpsbroker/dpsbroker/provisioning"
	bolt "go.etcd.io/bbolt"
)

// TestBatchedWritesSurviveFailures mixes, in shared transactions, writes
// that succeed with writes whose function fails (a stale etag: the batch
// rolls back and runs the rest again) and commits whose precondition fails
// (an outcome: the batch commits). Every successful write must be there
// after a reopen, and no failed one.
func TestBatchedWritesSurviveFailures(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "dps.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutEnrollment(ctx, &provisioning.IndividualEnrollment{RegistrationID: "stale"}, ""); err != nil {
		t.Fatal(err)
	}
	const n = 24
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			now := time.Now()
			c := &provisioning.RegistrationCommit{
				Record:    &provisioning.RegistrationState{RegistrationID: fmt.Sprint("dev-", i), Status: provisioning.RegistrationAssigned},
				Operation: &provisioning.Operation{OperationID: fmt.Sprint("op-", i), Created: now, Expires: now.Add(time.Hour)},
				Event:     &provisioning.Event{Type: provisioning.EventAssigned, RegistrationID: fmt.Sprint("dev-", i)},
			}
			switch i % 3 {
			case 0:
				_, _, errs[i] = s.CommitRegistration(ctx, c)
			case 1:
				_, errs[i] = s.PutEnrollment(ctx, &provisioning.IndividualEnrollment{RegistrationID: "stale"}, "not-the-etag")
			case 2:
				c.IfMatch = "not-the-etag"
				_, _, errs[i] = s.CommitRegistration(ctx, c)
			}
		})
	}
	wg.Wait()
	for i, err := range errs {
		if i%3 == 0 && err != nil {
			t.Fatalf("commit %d: %v", i, err)
		}
		if i%3 != 0 && !errors.Is(err, provisioning.ErrPreconditionFailed) {
			t.Fatalf("write %d: %v, want ErrPreconditionFailed", i, err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openTest(t, path, Options{})
	for i := range n {
		_, errRec := s.GetRegistration(ctx, fmt.Sprint("dev-", i))
		_, errOp := s.GetOperation(ctx, fmt.Sprint("op-", i))
		if i%3 == 0 && (errRec != nil || errOp != nil) {
			t.Errorf("commit %d lost: record %v, operation %v", i, errRec, errOp)
		}
		if i%3 == 2 && (!errors.Is(errRec, provisioning.ErrNotFound) || !errors.Is(errOp, provisioning.ErrNotFound)) {
			t.Errorf("failed commit %d wrote: record %v, operation %v", i, errRec, errOp)
		}
	}
	if evs, err := s.ReadEvents(ctx, "", 100); err != nil || len(evs) != n/3 {
		t.Errorf("%d events (%v), want %d", len(evs), err, n/3)
	}
}

// TestBatcherRunsFailedCallAlone checks the rule that makes a function's
// error trustworthy: a call that fails in a shared transaction is run
// again on its own, and the others are committed without it.
func TestBatcherRunsFailedCallAlone(t *testing.T) {
	db, err := bolt.Open(filepath.Join(t.TempDir(), "b.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucket([]byte("b")); return err }); err != nil {
		t.Fatal(err)
	}
	b := &batcher{db: db}
	put := func(k string) *batchCall {
		return &batchCall{done: make(chan error, 1), fn: func(tx *bolt.Tx) error { return tx.Bucket([]byte("b")).Put([]byte(k), []byte("v")) }}
	}
	// flaky fails on its first run only: the batch rolls back, the others
	// commit together, and flaky succeeds alone.
	runs := 0
	flaky := &batchCall{done: make(chan error, 1), fn: func(tx *bolt.Tx) error {
		runs++
		if runs == 1 {
			return errors.New("first run fails")
		}
		return tx.Bucket([]byte("b")).Put([]byte("flaky"), []byte("v"))
	}}
	calls := []*batchCall{put("a"), flaky, put("c")}
	b.run(slices.Clone(calls))
	for i, c := range calls {
		if err := <-c.done; err != nil {
			t.Errorf("call %d: %v", i, err)
		}
	}
	if runs != 2 {
		t.Errorf("failing call ran %d times, want 2 (in the batch, then alone)", runs)
	}
	_ = db.View(func(tx *bolt.Tx) error {
		for _, k := range []string{"a", "c", "flaky"} {
			if tx.Bucket([]byte("b")).Get([]byte(k)) == nil {
				t.Errorf("%s not committed", k)
			}
		}
		return nil
	})
}
