package storetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/dpsbroker/dpsbroker/provisioning"
)

// testCommit is a commit of a first registration of id under groupID.
func testCommit(id, opID, groupID, hub string) *provisioning.RegistrationCommit {
	now := time.Now().UTC().Truncate(time.Millisecond)
	rec := testRegistration(id, groupID, hub)
	return &provisioning.RegistrationCommit{
		Record: rec,
		Operation: &provisioning.Operation{
			OperationID: opID, RegistrationID: id, Status: rec.Status,
			Created: now, Expires: now.Add(time.Hour),
		},
		Event: &provisioning.Event{
			Type: provisioning.EventAssigned, Time: now, RegistrationID: id,
			AssignedHub: hub, OperationID: opID, EnrollmentGroupID: groupID, Node: "node-t",
		},
	}
}

// commitState is what a commit may have written, read back.
type commitState struct {
	rec    *provisioning.RegistrationState // nil when missing
	events []*provisioning.Event
}

func readCommitState(t *testing.T, s provisioning.Store, ctx context.Context, id string) commitState {
	t.Helper()
	var st commitState
	rec, err := s.GetRegistration(ctx, id)
	switch {
	case errors.Is(err, provisioning.ErrNotFound):
	case err != nil:
		t.Fatalf("GetRegistration: %v", err)
	default:
		st.rec = rec
	}
	if st.events, err = s.ReadEvents(ctx, "", 1000); err != nil {
		t.Fatalf("ReadEvents: %v", err)
	}
	return st
}

func wantNoOperation(t *testing.T, s provisioning.Store, ctx context.Context, opID string) {
	t.Helper()
	if op, err := s.GetOperation(ctx, opID); !errors.Is(err, provisioning.ErrNotFound) {
		t.Fatalf("operation %s after a failed commit: %+v, %v; want ErrNotFound", opID, op, err)
	}
}

func runCommit(t *testing.T, newStore func(t *testing.T) provisioning.Store) {
	t.Run("WritesAllThree", func(t *testing.T) {
		s, ctx := newStore(t), ctxT(t)
		c := testCommit("Dev-C1", "5.op-1", "Group-A", "hub-a.example")
		stored, evID, err := s.CommitRegistration(ctx, c)
		if err != nil {
			t.Fatal(err)
		}
		if stored.ETag == "" || stored.CreatedDateTimeUTC == nil || stored.LastUpdatedDateTimeUTC == nil ||
			stored.RegistrationID != "Dev-C1" || stored.AssignedHub != "hub-a.example" || evID == "" {
			t.Fatalf("commit returned %+v, event %q", stored, evID)
		}
		if c.Record.ETag != "" || c.Record.CreatedDateTimeUTC != nil || c.Operation.Result != nil || c.Event.ID != "" {
			t.Errorf("CommitRegistration modified its argument: %+v %+v %+v", c.Record, c.Operation, c.Event)
		}
		rec, err := s.GetRegistration(ctx, "dev-c1")
		if err != nil {
			t.Fatal(err)
		}
		if rec.ETag != stored.ETag || !rec.CreatedDateTimeUTC.Equal(*stored.CreatedDateTimeUTC) || rec.AssignedHub != "hub-a.example" {
			t.Errorf("stored record %+v, commit returned %+v", rec, stored)
		}
		op, err := s.GetOperation(ctx, "5.op-1")
		if err != nil {
			t.Fatal(err)
		}
		if op.Result == nil || op.Result.ETag != stored.ETag || op.Result.AssignedHub != "hub-a.example" ||
			op.Result.CreatedDateTimeUTC == nil || !op.Result.CreatedDateTimeUTC.Equal(*stored.CreatedDateTimeUTC) ||
			op.Status != provisioning.RegistrationAssigned || !op.Expires.Equal(c.Operation.Expires) {
			t.Errorf("stored operation %+v (result %+v), want the stored record as result", op, op.Result)
		}
		evs, err := s.ReadEvents(ctx, "", 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) != 1 || evs[0].ID != evID || evs[0].OperationID != "5.op-1" || evs[0].Node != "node-t" {
			t.Fatalf("events %+v, want one with ID %q", evs, evID)
		}
		if ids := pageAll(t, s, listRegistrationIDs("group-a"), 10); len(ids) != 1 {
			t.Errorf("group index after commit: %v", ids)
		}

		// Re-registration: etag-checked, keeps the creation time, moves
		// the record to another group's index.
		again := testCommit("dev-c1", "5.op-2", "group-b", "hub-b.example")
		again.IfMatch = stored.ETag
		time.Sleep(2 * time.Millisecond)
		second, evID2, err := s.CommitRegistration(ctx, again)
		if err != nil {
			t.Fatal(err)
		}
		if second.ETag == stored.ETag || !second.CreatedDateTimeUTC.Equal(*stored.CreatedDateTimeUTC) || evID2 == evID {
			t.Errorf("second commit: %+v (event %q), first %+v", second, evID2, stored)
		}
		op2, err := s.GetOperation(ctx, "5.op-2")
		if err != nil {
			t.Fatal(err)
		}
		if op2.Result == nil || op2.Result.ETag != second.ETag || !op2.Result.CreatedDateTimeUTC.Equal(*stored.CreatedDateTimeUTC) {
			t.Errorf("second operation result %+v, want etag %q and the first creation time", op2.Result, second.ETag)
		}
		if ids := pageAll(t, s, listRegistrationIDs("group-a"), 10); len(ids) != 0 {
			t.Errorf("old group index after re-registration: %v", ids)
		}
		if ids := pageAll(t, s, listRegistrationIDs("group-b"), 10); len(ids) != 1 {
			t.Errorf("new group index after re-registration: %v", ids)
		}
	})

	t.Run("PreconditionWritesNothing", func(t *testing.T) {
		s, ctx := newStore(t), ctxT(t)
		first, _, err := s.CommitRegistration(ctx, testCommit("dev-p", "5.op-first", "g", "hub-a.example"))
		if err != nil {
			t.Fatal(err)
		}
		before := readCommitState(t, s, ctx, "dev-p")
		for i, tc := range []struct {
			name       string
			id         string
			ifMatch    string
			createOnly bool
		}{
			{"stale etag", "dev-p", "not-the-etag", false},
			{"create over an existing record", "dev-p", "", true},
			{"if-match on a missing record", "dev-missing", first.ETag, false},
			{"any on a missing record", "dev-missing", "*", false},
		} {
			t.Run(tc.name, func(t *testing.T) {
				opID := fmt.Sprint("5.op-fail-", i)
				c := testCommit(tc.id, opID, "g", "hub-b.example")
				c.IfMatch, c.CreateOnly = tc.ifMatch, tc.createOnly
				if _, _, err := s.CommitRegistration(ctx, c); !errors.Is(err, provisioning.ErrPreconditionFailed) {
					t.Fatalf("err = %v, want ErrPreconditionFailed", err)
				}
				wantNoOperation(t, s, ctx, opID)
				after := readCommitState(t, s, ctx, "dev-p")
				if len(after.events) != len(before.events) {
					t.Fatalf("a failed commit appended an event: %d events, want %d", len(after.events), len(before.events))
				}
				if after.rec == nil || after.rec.ETag != first.ETag || after.rec.AssignedHub != "hub-a.example" {
					t.Fatalf("a failed commit changed the record: %+v", after.rec)
				}
				if _, err := s.GetRegistration(ctx, "dev-missing"); !errors.Is(err, provisioning.ErrNotFound) {
					t.Fatalf("a failed commit created a record: %v", err)
				}
			})
		}
		t.Run("any etag", func(t *testing.T) {
			c := testCommit("dev-p", "5.op-any", "g", "hub-b.example")
			c.IfMatch = "*"
			if _, _, err := s.CommitRegistration(ctx, c); err != nil {
				t.Fatalf(`If-Match "*" on an existing record: %v`, err)
			}
		})
	})

	t.Run("ConcurrentSameETag", func(t *testing.T) {
		s, ctx := newStore(t), ctxT(t)
		first, _, err := s.CommitRegistration(ctx, testCommit("dev-race", "5.op-0", "", "hub-a.example"))
		if err != nil {
			t.Fatal(err)
		}
		const n = 8
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				c := testCommit("dev-race", fmt.Sprint("5.op-race-", i), "", fmt.Sprint("hub-", i))
				c.IfMatch = first.ETag
				_, _, errs[i] = s.CommitRegistration(ctx, c)
			})
		}
		wg.Wait()
		winner := -1
		for i, err := range errs {
			switch {
			case err == nil && winner >= 0:
				t.Fatalf("commits %d and %d both won with the same etag", winner, i)
			case err == nil:
				winner = i
			case !errors.Is(err, provisioning.ErrPreconditionFailed):
				t.Fatalf("commit %d: %v, want ErrPreconditionFailed", i, err)
			}
		}
		if winner < 0 {
			t.Fatal("no commit won")
		}
		for i := range n {
			op, err := s.GetOperation(ctx, fmt.Sprint("5.op-race-", i))
			if i == winner && err != nil {
				t.Errorf("winner's operation: %v", err)
			}
			if i != winner && !errors.Is(err, provisioning.ErrNotFound) {
				t.Errorf("loser %d's operation: %+v, %v", i, op, err)
			}
		}
		st := readCommitState(t, s, ctx, "dev-race")
		if len(st.events) != 2 {
			t.Errorf("%d events, want 2 (first commit and the winner)", len(st.events))
		}
		if st.rec == nil || st.rec.AssignedHub != fmt.Sprint("hub-", winner) {
			t.Errorf("record %+v, want the winner's hub-%d", st.rec, winner)
		}
	})

	t.Run("ConcurrentCreate", func(t *testing.T) {
		s, ctx := newStore(t), ctxT(t)
		const n = 8
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				c := testCommit("dev-new", fmt.Sprint("5.op-new-", i), "", "hub.example")
				c.CreateOnly = true
				_, _, errs[i] = s.CommitRegistration(ctx, c)
			})
		}
		wg.Wait()
		won := 0
		for i, err := range errs {
			switch {
			case err == nil:
				won++
			case !errors.Is(err, provisioning.ErrPreconditionFailed):
				t.Fatalf("commit %d: %v", i, err)
			}
		}
		if won != 1 {
			t.Fatalf("%d create-only commits won, want exactly 1", won)
		}
		if st := readCommitState(t, s, ctx, "dev-new"); len(st.events) != 1 {
			t.Errorf("%d events, want 1", len(st.events))
		}
	})

	t.Run("BadInput", func(t *testing.T) {
		s, ctx := newStore(t), ctxT(t)
		for _, tc := range []struct {
			name   string
			change func(c *provisioning.RegistrationCommit) *provisioning.RegistrationCommit
		}{
			{"nil commit", func(*provisioning.RegistrationCommit) *provisioning.RegistrationCommit { return nil }},
			{"nil record", func(c *provisioning.RegistrationCommit) *provisioning.RegistrationCommit { c.Record = nil; return c }},
			{"empty ID", func(c *provisioning.RegistrationCommit) *provisioning.RegistrationCommit {
				c.Record.RegistrationID = ""
				return c
			}},
			{"nil operation", func(c *provisioning.RegistrationCommit) *provisioning.RegistrationCommit { c.Operation = nil; return c }},
			{"empty operation ID", func(c *provisioning.RegistrationCommit) *provisioning.RegistrationCommit {
				c.Operation.OperationID = ""
				return c
			}},
			{"no expiry", func(c *provisioning.RegistrationCommit) *provisioning.RegistrationCommit {
				c.Operation.Expires = time.Time{}
				return c
			}},
			{"nil event", func(c *provisioning.RegistrationCommit) *provisioning.RegistrationCommit { c.Event = nil; return c }},
			{"create-only with if-match", func(c *provisioning.RegistrationCommit) *provisioning.RegistrationCommit {
				c.CreateOnly, c.IfMatch = true, "x"
				return c
			}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				if _, _, err := s.CommitRegistration(ctx, tc.change(testCommit("dev-bad", "5.op-bad", "", "hub.example"))); err == nil {
					t.Fatal("accepted")
				}
			})
		}
		if st := readCommitState(t, s, ctx, "dev-bad"); st.rec != nil || len(st.events) != 0 {
			t.Fatalf("refused commits wrote %+v, %d events", st.rec, len(st.events))
		}
		cancelled, cancel := context.WithCancel(ctx)
		cancel()
		if _, _, err := s.CommitRegistration(cancelled, testCommit("dev-bad", "5.op-bad", "", "hub.example")); !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled context: %v, want context.Canceled", err)
		}
	})
}
