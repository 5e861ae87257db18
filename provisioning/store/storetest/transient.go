package storetest

import (
	"bytes"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/dpsbroker/dpsbroker/provisioning"
)

// expiryWait bounds how long the suite polls for an expired entry to
// disappear. It is a ceiling for a slow machine, not an assertion.
const expiryWait = 10 * time.Second

func runOperations(t *testing.T, newStore func(t *testing.T) provisioning.Store) {
	t.Run("PutGetReplace", func(t *testing.T) {
		s, ctx := newStore(t), ctxT(t)
		if _, err := s.GetOperation(ctx, "missing"); !errors.Is(err, provisioning.ErrNotFound) {
			t.Fatalf("missing: err = %v, want ErrNotFound", err)
		}
		now := time.Now().UTC().Truncate(time.Millisecond)
		op := &provisioning.Operation{
			OperationID:    "4.0a1b2c3d.op",
			RegistrationID: "dev-1",
			Status:         provisioning.RegistrationAssigning,
			Created:        now,
			Expires:        now.Add(time.Hour),
		}
		if err := s.PutOperation(ctx, op); err != nil {
			t.Fatal(err)
		}
		op.Status = provisioning.RegistrationFailed // must not reach the store
		got, err := s.GetOperation(ctx, "4.0a1b2c3d.op")
		if err != nil {
			t.Fatal(err)
		}
		if got.Status != provisioning.RegistrationAssigning || got.RegistrationID != "dev-1" ||
			!got.Created.Equal(now) || !got.Expires.Equal(now.Add(time.Hour)) {
			t.Errorf("GetOperation = %+v", got)
		}
		done := *got
		done.Status = provisioning.RegistrationAssigned
		done.Result = testRegistration("dev-1", "", "hub.example")
		if err := s.PutOperation(ctx, &done); err != nil {
			t.Fatal(err)
		}
		got, err = s.GetOperation(ctx, "4.0a1b2c3d.op")
		if err != nil {
			t.Fatal(err)
		}
		if got.Status != provisioning.RegistrationAssigned || got.Result == nil || got.Result.AssignedHub != "hub.example" {
			t.Errorf("after replace: %+v", got)
		}
		got.Result.AssignedHub = "changed"
		if again, _ := s.GetOperation(ctx, "4.0a1b2c3d.op"); again == nil || again.Result.AssignedHub != "hub.example" {
			t.Errorf("stored operation changed through a Get result")
		}
		if err := s.PutOperation(ctx, &provisioning.Operation{OperationID: "no-expiry", Status: provisioning.RegistrationAssigning}); err == nil {
			t.Errorf("operation without expiry: no error")
		}
		if err := s.PutOperation(ctx, &provisioning.Operation{Expires: now.Add(time.Hour)}); err == nil {
			t.Errorf("operation without ID: no error")
		}
	})
	t.Run("Expiry", func(t *testing.T) {
		s, ctx := newStore(t), ctxT(t)
		now := time.Now()
		if err := s.PutOperation(ctx, &provisioning.Operation{OperationID: "short", Status: provisioning.RegistrationAssigning, Created: now, Expires: now.Add(time.Second)}); err != nil {
			t.Fatal(err)
		}
		if err := s.PutOperation(ctx, &provisioning.Operation{OperationID: "long", Status: provisioning.RegistrationAssigning, Created: now, Expires: now.Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
		Eventually(t, expiryWait, "operation expires", func() bool {
			_, err := s.GetOperation(ctx, "short")
			return errors.Is(err, provisioning.ErrNotFound)
		})
		if _, err := s.GetOperation(ctx, "long"); err != nil {
			t.Errorf("unexpired operation: %v", err)
		}
	})
}

func runEvents(t *testing.T, newStore func(t *testing.T) provisioning.Store) {
	t.Run("AppendRead", func(t *testing.T) {
		s, ctx := newStore(t), ctxT(t)
		if evs, err := s.ReadEvents(ctx, "", 10); err != nil || len(evs) != 0 {
			t.Fatalf("empty log: %d events, %v", len(evs), err)
		}
		base := time.Now().UTC().Truncate(time.Millisecond)
		var ids []string
		for i := range 6 {
			ev := &provisioning.Event{
				Type:           provisioning.EventAssigned,
				Time:           base.Add(time.Duration(i) * time.Second),
				RegistrationID: fmt.Sprint("dev-", i),
				AssignedHub:    "hub.example",
				ErrorCode:      i,
			}
			id, err := s.AppendEvent(ctx, ev)
			if err != nil {
				t.Fatal(err)
			}
			if id == "" {
				t.Fatal("AppendEvent returned an empty ID")
			}
			ids = append(ids, id)
		}
		all, err := s.ReadEvents(ctx, "", 100)
		if err != nil {
			t.Fatal(err)
		}
		if len(all) != 6 {
			t.Fatalf("ReadEvents = %d events, want 6", len(all))
		}
		for i, ev := range all {
			if ev.ID != ids[i] || ev.RegistrationID != fmt.Sprint("dev-", i) || ev.ErrorCode != i ||
				ev.Type != provisioning.EventAssigned || !ev.Time.Equal(base.Add(time.Duration(i)*time.Second)) {
				t.Errorf("event %d = %+v, want ID %s", i, ev, ids[i])
			}
		}
		page, err := s.ReadEvents(ctx, ids[1], 2)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) != 2 || page[0].ID != ids[2] || page[1].ID != ids[3] {
			t.Errorf("ReadEvents after %s limit 2 = %v", ids[1], eventIDs(page))
		}
		if tail, err := s.ReadEvents(ctx, ids[5], 10); err != nil || len(tail) != 0 {
			t.Errorf("after the last event: %v, %v", eventIDs(tail), err)
		}
		if _, err := s.ReadEvents(ctx, "", 0); err == nil {
			t.Errorf("limit 0: no error")
		}
		if _, err := s.ReadEvents(ctx, "not an event id", 10); err == nil {
			t.Errorf("garbage afterID: no error")
		}
	})
	t.Run("ConcurrentAppend", func(t *testing.T) {
		s, ctx := newStore(t), ctxT(t)
		const writers, each = 4, 25
		var wg sync.WaitGroup
		errs := make(chan error, writers*each)
		for w := range writers {
			wg.Go(func() {
				for i := range each {
					if _, err := s.AppendEvent(ctx, &provisioning.Event{Type: provisioning.EventRefused, Time: time.Now(), RegistrationID: fmt.Sprintf("w%d-%d", w, i)}); err != nil {
						errs <- err
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		seenID := map[string]bool{}
		seenReg := map[string]bool{}
		after := ""
		for range 100 {
			page, err := s.ReadEvents(ctx, after, 7)
			if err != nil {
				t.Fatal(err)
			}
			if len(page) == 0 {
				break
			}
			for _, ev := range page {
				if seenID[ev.ID] {
					t.Fatalf("event %s read twice", ev.ID)
				}
				seenID[ev.ID] = true
				seenReg[ev.RegistrationID] = true
			}
			after = page[len(page)-1].ID
		}
		if len(seenReg) != writers*each {
			t.Errorf("read %d distinct events, want %d", len(seenReg), writers*each)
		}
	})
}

func eventIDs(evs []*provisioning.Event) []string {
	ids := make([]string, len(evs))
	for i, ev := range evs {
		ids[i] = ev.ID
	}
	return ids
}

func runChallenges(t *testing.T, newStore func(t *testing.T) provisioning.Store) {
	t.Run("TakeOnce", func(t *testing.T) {
		s, ctx := newStore(t), ctxT(t)
		if _, err := s.TakeChallenge(ctx, "missing"); !errors.Is(err, provisioning.ErrNotFound) {
			t.Fatalf("missing: err = %v, want ErrNotFound", err)
		}
		value := []byte{0, 1, 2, 0xff, 'n', 'o', 'n', 'c', 'e'}
		in := bytes.Clone(value)
		if err := s.PutChallenge(ctx, "tpm:dev-1", in, time.Minute); err != nil {
			t.Fatal(err)
		}
		in[0] = 'X' // must not reach the store
		got, err := s.TakeChallenge(ctx, "tpm:dev-1")
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, value) {
			t.Errorf("TakeChallenge = %x, want %x", got, value)
		}
		if _, err := s.TakeChallenge(ctx, "tpm:dev-1"); !errors.Is(err, provisioning.ErrNotFound) {
			t.Errorf("second take: err = %v, want ErrNotFound", err)
		}
		// A later Put replaces an untaken challenge.
		if err := s.PutChallenge(ctx, "k", []byte("old"), time.Minute); err != nil {
			t.Fatal(err)
		}
		if err := s.PutChallenge(ctx, "k", []byte("new"), time.Minute); err != nil {
			t.Fatal(err)
		}
		if got, err := s.TakeChallenge(ctx, "k"); err != nil || string(got) != "new" {
			t.Errorf("take after replace = %q, %v", got, err)
		}
		for _, ttl := range []time.Duration{0, -time.Second} {
			if err := s.PutChallenge(ctx, "ttl", []byte("v"), ttl); err == nil {
				t.Errorf("ttl %v: no error", ttl)
			}
		}
	})
	t.Run("Expiry", func(t *testing.T) {
		s, ctx := newStore(t), ctxT(t)
		if err := s.PutChallenge(ctx, "short", []byte("v"), time.Second); err != nil {
			t.Fatal(err)
		}
		if err := s.PutChallenge(ctx, "long", []byte("v"), time.Hour); err != nil {
			t.Fatal(err)
		}
		// Polling with Take would consume a live value, so wait well past
		// the TTL and then expect it gone: a store must not hand out an
		// expired challenge even if its sweeper has not run yet.
		time.Sleep(1500 * time.Millisecond)
		if _, err := s.TakeChallenge(ctx, "short"); !errors.Is(err, provisioning.ErrNotFound) {
			t.Errorf("expired challenge: err = %v, want ErrNotFound", err)
		}
		if got, err := s.TakeChallenge(ctx, "long"); err != nil || string(got) != "v" {
			t.Errorf("unexpired challenge: %q, %v", got, err)
		}
	})
	t.Run("ConcurrentTake", func(t *testing.T) {
		s, ctx := newStore(t), ctxT(t)
		for round := range 5 {
			key := fmt.Sprint("race-", round)
			if err := s.PutChallenge(ctx, key, []byte("secret"), time.Minute); err != nil {
				t.Fatal(err)
			}
			var wg sync.WaitGroup
			var mu sync.Mutex
			wins := 0
			start := make(chan struct{})
			for range concurrency {
				wg.Go(func() {
					<-start
					v, err := s.TakeChallenge(ctx, key)
					switch {
					case err == nil && string(v) == "secret":
						mu.Lock()
						wins++
						mu.Unlock()
					case err == nil:
						t.Errorf("took %q, want secret", v)
					case !errors.Is(err, provisioning.ErrNotFound):
						t.Errorf("take: err = %v, want nil or ErrNotFound", err)
					}
				})
			}
			close(start)
			wg.Wait()
			if wins != 1 {
				t.Fatalf("round %d: %d takers got the challenge, want exactly 1", round, wins)
			}
		}
	})
}
