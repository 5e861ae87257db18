package bolt

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dpsbroker/dpsbroker/provisioning"
	bolt "go.etcd.io/bbolt"
)

// TestJournalStatsLifecycle follows one batch of registrations through
// the journal with the writer driven by hand (no goroutine, so the idle
// apply cannot race the checks): journaled and pending, applied, then a
// second batch lost to a crash and recovered by the next Open.
func TestJournalStatsLifecycle(t *testing.T) {
	const n = 5
	path := filepath.Join(t.TempDir(), "dps.db")
	owner, jw, db := handWriter(t, path)
	batch := func(prefix string) { t.Helper(); handCommit(t, jw, prefix, n) }

	batch("first")
	got := owner.JournalStats()
	want := JournalStats{Enabled: true, Appends: 1, Entries: n, Pending: n}
	if got.SyncTime <= 0 {
		t.Errorf("SyncTime %v after an append, want > 0", got.SyncTime)
	}
	if got.SyncTime, got.ApplyTime = 0, 0; got != want {
		t.Errorf("after one batch: %+v, want %+v", got, want)
	}

	if err := jw.apply(); err != nil {
		t.Fatal(err)
	}
	got = owner.JournalStats()
	if got.ApplyTime <= 0 {
		t.Errorf("ApplyTime %v after an apply, want > 0", got.ApplyTime)
	}
	want = JournalStats{Enabled: true, Appends: 1, Entries: n, Applies: 1}
	if got.SyncTime, got.ApplyTime = 0, 0; got != want {
		t.Errorf("after the apply: %+v, want %+v", got, want)
	}

	batch("second")
	if got := owner.JournalStats(); got.Pending != n || got.Entries != 2*n || got.Applies != 1 {
		t.Fatalf("after the second batch: %+v, want %d pending of %d entries, 1 apply", got, n, 2*n)
	}
	jw.abandon = true // crash
	jw.finish()
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	s := openTest(t, path, Options{})
	got = s.JournalStats()
	want = JournalStats{Enabled: true, Applies: 1, Recovered: n}
	if got.SyncTime, got.ApplyTime = 0, 0; got != want {
		t.Errorf("after recovery: %+v, want %+v (counters start at zero on Open; the replay is one apply)", got, want)
	}
}

// TestJournalStatsApplyFailure: an apply that fails counts as a failure
// and leaves its registrations pending, which is what an operator alerts
// on.
func TestJournalStatsApplyFailure(t *testing.T) {
	const n = 3
	owner, jw, db := handWriter(t, filepath.Join(t.TempDir(), "dps.db"))
	handCommit(t, jw, "dev", n)
	if err := db.Close(); err != nil { // bbolt refuses the apply from now on
		t.Fatal(err)
	}
	if err := jw.apply(); err == nil {
		t.Fatal("apply on a closed database succeeded")
	}
	got := owner.JournalStats()
	want := JournalStats{Enabled: true, Appends: 1, Entries: n, Pending: n, ApplyFailures: 1}
	if got.SyncTime, got.ApplyTime = 0, 0; got != want {
		t.Errorf("after a failed apply: %+v, want %+v", got, want)
	}
	jw.abandon = true
	jw.finish()
}

// handWriter opens a store file's journal writer without the store's
// writer goroutine, so that the test decides when commits and applies
// happen. owner is the store JournalStats reads.
func handWriter(t *testing.T, path string) (owner *Store, jw *journalWriter, db *bolt.DB) {
	t.Helper()
	s, err := Open(path, Options{noJournal: true}) // the buckets
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	db, err = openDB(path, Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	owner = &Store{overlay: &overlay{regs: map[string]*journalEntry{}, ops: map[string]*journalEntry{}}, now: time.Now, maxEvents: DefaultMaxEvents}
	jw, err = openJournalWriter(db, path+journalSuffix, owner, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	owner.writer.jw = jw
	return owner, jw, db
}

// handCommit journals n registrations in one batch, as the writer does
// with commits queued together.
func handCommit(t *testing.T, jw *journalWriter, prefix string, n int) {
	t.Helper()
	var calls []*batchCall
	for i := range n {
		c := journalCommit(t, fmt.Sprintf("%s-%d", prefix, i), "g", "hub")
		key, _ := entryKey("registration", c.Record.RegistrationID)
		calls = append(calls, &batchCall{reg: &regCall{c: c, key: key}, done: make(chan error, 1)})
	}
	jw.commit(calls)
	for i, call := range calls {
		if err := <-call.done; err != nil {
			t.Fatalf("commit %d: %v", i, err)
		}
	}
}

// TestJournalStatsStore reads the counters through the store's own
// writer: lone commits, the apply a listing forces, a commit too large
// for the journal, and a store without a journal, whose counters stay
// zero.
func TestJournalStatsStore(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name      string
		noJournal bool
		want      JournalStats // Applies, SyncTime and ApplyTime checked apart
	}{
		// Sequential commits reach the writer one at a time: one append each.
		{name: "journal", want: JournalStats{Enabled: true, Appends: 3, Entries: 3, DirectCommits: 1}},
		{name: "no journal", noJournal: true, want: JournalStats{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := openTest(t, filepath.Join(t.TempDir(), "dps.db"), Options{noJournal: tc.noJournal})
			commitAll(t, s, []*provisioning.RegistrationCommit{
				journalCommit(t, "a", "g", "hub"), journalCommit(t, "b", "g", "hub"), journalCommit(t, "c", "g", "hub"),
			})
			// A listing applies the journal first.
			if _, _, err := s.ListRegistrations(ctx, "g", "", 10); err != nil {
				t.Fatal(err)
			}
			large := journalCommit(t, "large", "g", "hub")
			large.Record.Payload = []byte(`"` + strings.Repeat("p", maxJournalRecord) + `"`)
			commitAll(t, s, []*provisioning.RegistrationCommit{large})

			got := s.JournalStats()
			if tc.want.Enabled {
				// The idle apply may have run between the commits too.
				if got.Applies < 1 || got.SyncTime <= 0 || got.ApplyTime <= 0 {
					t.Errorf("Applies %d, SyncTime %v, ApplyTime %v: want all > 0", got.Applies, got.SyncTime, got.ApplyTime)
				}
				got.Applies, got.SyncTime, got.ApplyTime = 0, 0, 0
			}
			if got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}
