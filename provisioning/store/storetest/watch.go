package storetest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/dpsbroker/dpsbroker/provisioning"
)

// changeWait bounds how long the suite waits for a change to arrive; change
// feeds may be asynchronous.
const changeWait = 10 * time.Second

func runWatch(t *testing.T, newStore func(t *testing.T) provisioning.Store) {
	t.Run("Delivers", func(t *testing.T) {
		s := newStore(t)
		ctx := ctxT(t)
		wctx, cancel := context.WithCancel(ctx)
		defer cancel()
		ch := s.WatchChanges(wctx)
		other := s.WatchChanges(wctx)
		ca := NewCACertificate(t, "watch-ca")

		steps := []struct {
			name  string
			write func() error
			want  provisioning.Change
		}{
			{"put enrollment", func() error {
				_, err := s.PutEnrollment(ctx, testEnrollment("Dev-Watch", "d"), "")
				return err
			}, provisioning.Change{Kind: provisioning.ChangeEnrollment, ID: "dev-watch"}},
			{"delete enrollment", func() error {
				return s.DeleteEnrollment(ctx, "DEV-WATCH", "")
			}, provisioning.Change{Kind: provisioning.ChangeEnrollment, ID: "dev-watch"}},
			{"put group", func() error {
				_, err := s.PutEnrollmentGroup(ctx, testGroup("Group-Watch", "hub"), "")
				return err
			}, provisioning.Change{Kind: provisioning.ChangeGroup, ID: "group-watch"}},
			{"delete group", func() error {
				return s.DeleteEnrollmentGroup(ctx, "group-watch", "*")
			}, provisioning.Change{Kind: provisioning.ChangeGroup, ID: "group-watch"}},
			{"put CA", func() error {
				_, err := s.PutCACertificate(ctx, &provisioning.CACertificate{Name: "CA-Watch", Certificate: ca.PEM}, "")
				return err
			}, provisioning.Change{Kind: provisioning.ChangeCA, ID: "ca-watch"}},
			{"delete CA", func() error {
				return s.DeleteCACertificate(ctx, "ca-watch", "")
			}, provisioning.Change{Kind: provisioning.ChangeCA, ID: "ca-watch"}},
		}
		for _, st := range steps {
			if err := st.write(); err != nil {
				t.Fatalf("%s: %v", st.name, err)
			}
			WaitChange(t, ch, st.want, changeWait)
			WaitChange(t, other, st.want, changeWait)
		}
	})
	t.Run("ClosesOnCancel", func(t *testing.T) {
		s := newStore(t)
		wctx, cancel := context.WithCancel(ctxT(t))
		ch := s.WatchChanges(wctx)
		cancel()
		deadline := time.After(changeWait)
		for {
			select {
			case _, ok := <-ch:
				if !ok {
					return
				}
			case <-deadline:
				t.Fatal("channel not closed after the context ended")
			}
		}
	})
	t.Run("SlowConsumerLosesNothingSilently", func(t *testing.T) {
		// A watcher that does not read must not block writers; when it
		// reads again it sees every change or a ChangeAll.
		s := newStore(t)
		ctx := ctxT(t)
		wctx, cancel := context.WithCancel(ctx)
		defer cancel()
		ch := s.WatchChanges(wctx)
		const writes = 300
		for i := range writes {
			if _, err := s.PutEnrollment(ctx, testEnrollment(fmt.Sprintf("slow-%03d", i), "d"), ""); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := s.PutEnrollmentGroup(ctx, testGroup("marker", "hub"), ""); err != nil {
			t.Fatal(err)
		}
		seen := map[string]bool{}
		timeout := time.After(changeWait)
		for {
			select {
			case c, ok := <-ch:
				if !ok {
					t.Fatal("channel closed")
				}
				switch {
				case c.Kind == provisioning.ChangeAll:
					return
				case c.Kind == provisioning.ChangeGroup && c.ID == "marker":
					if len(seen) != writes {
						t.Fatalf("marker arrived after %d of %d changes and no ChangeAll", len(seen), writes)
					}
					return
				case c.Kind == provisioning.ChangeEnrollment:
					seen[c.ID] = true
				}
			case <-timeout:
				t.Fatalf("neither the marker nor ChangeAll arrived (saw %d changes)", len(seen))
			}
		}
	})
}
