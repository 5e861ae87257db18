package bolt

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dpsbroker/dpsbroker/provisioning"
	"github.com/dpsbroker/dpsbroker/provisioning/store/storetest"
	bolt "go.etcd.io/bbolt"
)

// TestConformanceWithoutJournal runs the store contract with registration
// commits going straight into bbolt (the path for commits too large for
// the journal).
func TestConformanceWithoutJournal(t *testing.T) {
	storetest.Run(t, func(t *testing.T) provisioning.Store {
		return openTest(t, filepath.Join(t.TempDir(), "dps.db"), Options{noJournal: true})
	})
}

// crash ends s as a killed process would: the journal is not applied and
// nothing else is written. bbolt's own commits are durable already.
func crash(t *testing.T, s *Store) {
	t.Helper()
	s.writer.jw.abandon = true
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

// openToCrash opens a store that the test ends itself (crash).
func openToCrash(t *testing.T, path string) *Store {
	t.Helper()
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// journalCommit is a registration commit of id under group with a fresh
// time-ordered operation ID.
func journalCommit(t *testing.T, id, group, hub string) *provisioning.RegistrationCommit {
	t.Helper()
	opID, err := provisioning.NewOperationID()
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	return &provisioning.RegistrationCommit{
		Record: &provisioning.RegistrationState{RegistrationID: id, DeviceID: id, AssignedHub: hub,
			Status: provisioning.RegistrationAssigned, EnrollmentGroupID: group, AttestationType: provisioning.AttestationX509},
		Operation: &provisioning.Operation{OperationID: opID, RegistrationID: id, Status: provisioning.RegistrationAssigned,
			Created: now, Expires: now.Add(time.Hour)},
		Event: &provisioning.Event{Type: provisioning.EventAssigned, Time: now, RegistrationID: id, AssignedHub: hub,
			EnrollmentGroupID: group},
	}
}

// committed is what a commit returned: what must be readable afterwards.
type committed struct {
	id, opID, etag, eventID, hub, group string
}

func commitAll(t *testing.T, s *Store, commits []*provisioning.RegistrationCommit) []committed {
	t.Helper()
	var out []committed
	for _, c := range commits {
		rec, evID, err := s.CommitRegistration(context.Background(), c)
		if err != nil {
			t.Fatalf("commit %s: %v", c.Record.RegistrationID, err)
		}
		out = append(out, committed{c.Record.RegistrationID, c.Operation.OperationID, rec.ETag, evID, c.Record.AssignedHub, c.Record.EnrollmentGroupID})
	}
	return out
}

// inBolt says whether bbolt itself (not the overlay) holds registration id.
func inBolt(t *testing.T, s *Store, id string) bool {
	t.Helper()
	var ok bool
	if err := s.db.View(func(tx *bolt.Tx) error {
		ok = tx.Bucket(bucketRegistrations).Get([]byte(provisioning.RegistrationKey(id))) != nil
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return ok
}

// wantState checks that the latest commit of every registration in cs is
// what s returns, with its operation, its event and its group index entry.
func wantState(t *testing.T, s *Store, cs []committed) {
	t.Helper()
	ctx := context.Background()
	latest := map[string]committed{}
	for _, c := range cs {
		latest[c.id] = c
	}
	events, err := s.ReadEvents(ctx, "", 100_000)
	if err != nil {
		t.Fatal(err)
	}
	byID := map[string]*provisioning.Event{}
	for _, ev := range events {
		byID[ev.ID] = ev
	}
	for _, c := range cs {
		op, err := s.GetOperation(ctx, c.opID)
		if err != nil || op.RegistrationID != c.id || op.Result == nil || op.Result.ETag != c.etag {
			t.Errorf("operation %s of %s: %+v, %v", c.opID, c.id, op, err)
		}
		if ev := byID[c.eventID]; ev == nil || ev.RegistrationID != c.id || ev.AssignedHub != c.hub {
			t.Errorf("event %s of %s: %+v", c.eventID, c.id, ev)
		}
	}
	for id, c := range latest {
		rec, err := s.GetRegistration(ctx, id)
		if err != nil || rec.ETag != c.etag || rec.AssignedHub != c.hub {
			t.Errorf("registration %s: %+v, %v; want etag %s hub %s", id, rec, err, c.etag, c.hub)
			continue
		}
		page, _, err := s.ListRegistrations(ctx, c.group, "", 1000)
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, r := range page {
			found = found || r.RegistrationID == id
		}
		if !found {
			t.Errorf("registration %s is not listed under its group %q", id, c.group)
		}
	}
}

// TestJournalRecovery: registrations acknowledged from the journal and
// not yet applied to bbolt when the process dies are all there after the
// next open: records (the newest of each device), operations, events and
// the group index, with the etags and event IDs the commits returned; and
// numbering continues above them.
func TestJournalRecovery(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dps.db")
	s := openToCrash(t, path)
	var commits []*provisioning.RegistrationCommit
	for i := range 20 {
		commits = append(commits, journalCommit(t, fmt.Sprintf("dev-%02d", i), "group-a", "hub-1"))
	}
	// Returning devices: the newest record must win, and one moves group.
	commits = append(commits, journalCommit(t, "dev-03", "group-a", "hub-2"), journalCommit(t, "dev-04", "group-b", "hub-2"))
	cs := commitAll(t, s, commits)
	if inBolt(t, s, "dev-00") {
		t.Fatal("dev-00 is in bbolt already: the test would not exercise recovery")
	}
	crash(t, s)

	s = openTest(t, path, Options{})
	for _, id := range []string{"dev-00", "dev-19"} {
		if !inBolt(t, s, id) {
			t.Errorf("%s was not applied to bbolt on open", id)
		}
	}
	wantState(t, s, cs)
	page, _, err := s.ListRegistrations(context.Background(), "group-a", "", 1000)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range page {
		if r.RegistrationID == "dev-04" {
			t.Error("dev-04 moved to group-b but is still listed under group-a")
		}
	}
	// Numbering continues: a new commit's etag and event ID are new.
	next := commitAll(t, s, []*provisioning.RegistrationCommit{journalCommit(t, "dev-00", "group-a", "hub-3")})[0]
	for _, c := range cs {
		if c.etag == next.etag || c.eventID == next.eventID {
			t.Fatalf("after recovery a commit got etag %s / event %s again", next.etag, next.eventID)
		}
	}
}

// TestJournalTornTail: a record torn by the crash (never acknowledged:
// its fdatasync did not return) ends recovery; everything before it is
// recovered.
func TestJournalTornTail(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dps.db")
	s := openToCrash(t, path)
	cs := commitAll(t, s, []*provisioning.RegistrationCommit{
		journalCommit(t, "kept-1", "g", "hub"), journalCommit(t, "kept-2", "g", "hub"), journalCommit(t, "torn", "g", "hub"),
	})
	end := s.writer.jw.j.off
	crash(t, s)

	data, err := os.ReadFile(path + journalSuffix)
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(data)) != journalSize {
		t.Fatalf("journal is %d bytes, want it preallocated to %d", len(data), journalSize)
	}
	data[end-5] ^= 0xff // inside the last record
	if err := os.WriteFile(path+journalSuffix, data, 0o600); err != nil {
		t.Fatal(err)
	}
	s = openTest(t, path, Options{})
	wantState(t, s, cs[:2])
	if _, err := s.GetRegistration(context.Background(), "torn"); !errors.Is(err, provisioning.ErrNotFound) {
		t.Errorf("the torn record: %v, want ErrNotFound", err)
	}
}

// TestJournalStaleRecordsNotReplayed: once applied, a journal record is
// never replayed over a newer write, even if the journal still holds it
// and the process dies later.
func TestJournalStaleRecordsNotReplayed(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "dps.db")
	s := openToCrash(t, path)
	commitAll(t, s, []*provisioning.RegistrationCommit{journalCommit(t, "dev-1", "g", "hub-old")})
	// A write that is not a registration commit applies the journal
	// first, then writes bbolt directly.
	rec, err := s.GetRegistration(ctx, "dev-1")
	if err != nil {
		t.Fatal(err)
	}
	rec.AssignedHub = "hub-admin"
	if _, err := s.PutRegistration(ctx, rec, rec.ETag); err != nil {
		t.Fatal(err)
	}
	crash(t, s)

	s = openTest(t, path, Options{})
	rec, err = s.GetRegistration(ctx, "dev-1")
	if err != nil || rec.AssignedHub != "hub-admin" {
		t.Fatalf("dev-1 after the crash: %+v, %v; want the later hub-admin write", rec, err)
	}
}

// TestJournalCycles: the journal is applied after applyEntries
// registrations and written again from its start; a crash in a later
// cycle recovers that cycle only, and what earlier cycles applied stays.
func TestJournalCycles(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dps.db")
	s := openToCrash(t, path)
	var commits []*provisioning.RegistrationCommit
	n := 2*applyEntries + 10
	for i := range n {
		commits = append(commits, journalCommit(t, fmt.Sprintf("dev-%04d", i%(applyEntries+7)), "g", fmt.Sprint("hub-", i)))
	}
	cs := commitAll(t, s, commits)
	if got := len(s.writer.jw.pending); got != n-2*applyEntries {
		t.Fatalf("%d pending after %d commits, want %d (applied every %d)", got, n, n-2*applyEntries, applyEntries)
	}
	if !inBolt(t, s, "dev-0000") {
		t.Fatal("the first cycle was not applied")
	}
	crash(t, s)
	s = openTest(t, path, Options{})
	wantState(t, s, cs)
}

// TestJournalAppliesWhenIdle: a lone registration reaches bbolt within
// applyInterval without any other write.
func TestJournalAppliesWhenIdle(t *testing.T) {
	s := openTest(t, filepath.Join(t.TempDir(), "dps.db"), Options{})
	commitAll(t, s, []*provisioning.RegistrationCommit{journalCommit(t, "lone", "g", "hub")})
	deadline := time.Now().Add(10 * applyInterval)
	for !inBolt(t, s, "lone") {
		if time.Now().After(deadline) {
			t.Fatalf("not applied to bbolt %v after the commit", 10*applyInterval)
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.overlay.mu.RLock()
	defer s.overlay.mu.RUnlock()
	if len(s.overlay.regs)+len(s.overlay.ops) != 0 {
		t.Errorf("overlay still holds %d registrations and %d operations after the apply", len(s.overlay.regs), len(s.overlay.ops))
	}
}

// TestJournalReadsDuringApplies: readers racing commits and the applies
// that move entries from the overlay to bbolt always find what was
// acknowledged.
func TestJournalReadsDuringApplies(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, filepath.Join(t.TempDir(), "dps.db"), Options{})
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := range 3 * applyEntries / 8 {
				c := journalCommit(t, fmt.Sprintf("w%d-dev-%03d", w, i), "g", "hub")
				rec, _, err := s.CommitRegistration(ctx, c)
				if err != nil {
					t.Error(err)
					return
				}
				for range 3 {
					got, err := s.GetRegistration(ctx, c.Record.RegistrationID)
					if err != nil || got.ETag != rec.ETag {
						t.Errorf("read after commit of %s: %+v, %v", c.Record.RegistrationID, got, err)
						return
					}
					if _, err := s.GetOperation(ctx, c.Operation.OperationID); err != nil {
						t.Errorf("operation of %s after its commit: %v", c.Record.RegistrationID, err)
						return
					}
				}
			}
		})
	}
	wg.Wait()
}

// TestReadJournal: the record format and where parsing stops.
func TestReadJournal(t *testing.T) {
	entry := func(seq uint64) *journalEntry {
		return &journalEntry{seq: seq, key: []byte("k"), record: []byte(`{"r":1}`), newGroup: "g", opID: []byte("op"),
			op: []byte(`{"o":1}`), expires: 42, eventSeq: seq, event: []byte(`{"e":1}`)}
	}
	records := func(seqs ...uint64) []byte {
		var b []byte
		for _, s := range seqs {
			b = entry(s).appendRecord(b)
		}
		return b
	}
	tail := func(b []byte, n int) []byte { return append(b, make([]byte, n)...) }
	flip := func(b []byte, at int) []byte { c := bytes.Clone(b); c[at] ^= 1; return c }
	one := len(records(1))
	for _, tc := range []struct {
		name    string
		data    []byte
		applied uint64
		want    []uint64
	}{
		{"empty", nil, 0, nil},
		{"zeros", make([]byte, 4096), 0, nil},
		{"three", tail(records(1, 2, 3), 100), 0, []uint64{1, 2, 3}},
		{"applied skipped", records(1, 2, 3), 2, []uint64{3}},
		{"older cycle after", append(records(7, 8), records(3, 4)...), 0, []uint64{7, 8}},
		{"torn checksum", flip(records(1, 2, 3), 2*one+20), 0, []uint64{1, 2}},
		{"torn length", flip(records(1, 2), one+1), 0, []uint64{1}},
		{"cut short", records(1, 2)[:2*one-3], 0, []uint64{1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := readJournal(tc.data, tc.applied)
			if err != nil {
				t.Fatal(err)
			}
			var seqs []uint64
			for _, e := range got {
				seqs = append(seqs, e.seq)
				if want := entry(e.seq); string(e.record) != string(want.record) || e.newGroup != "g" || e.expires != 42 || string(e.event) != string(want.event) {
					t.Errorf("record %d decoded as %+v", e.seq, e)
				}
			}
			if fmt.Sprint(seqs) != fmt.Sprint(tc.want) {
				t.Errorf("got records %v, want %v", seqs, tc.want)
			}
		})
	}
	// A record whose checksum holds but whose payload does not decode
	// is an error, not the end of the journal: it may be acknowledged.
	bad := &journalEntry{seq: 1, key: []byte("k")} // no record, operation or event
	if _, err := readJournal(bad.appendRecord(nil), 0); err == nil {
		t.Error("an undecodable record was accepted")
	}
}

// TestJournalBatchSpanningCycles: one batch of commits larger than the
// room left in the journal is written in parts, with an apply between
// them; the apply's marker must not cover the part written after it, or
// a crash would lose acknowledged registrations.
func TestJournalBatchSpanningCycles(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dps.db")
	s, err := Open(path, Options{noJournal: true}) // the buckets
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := openDB(path, Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	owner := &Store{overlay: &overlay{regs: map[string]*journalEntry{}, ops: map[string]*journalEntry{}}, now: time.Now, maxEvents: DefaultMaxEvents}
	jw, err := openJournalWriter(db, path+journalSuffix, owner, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	// ~0.5 MB records: 16 fill the 8 MB journal, so 24 in one batch
	// span two cycles.
	payload := []byte(`"` + strings.Repeat("p", 256<<10) + `"`)
	var calls []*batchCall
	for i := range 24 {
		c := journalCommit(t, fmt.Sprintf("big-%02d", i), "g", "hub")
		c.Record.Payload = payload
		key, _ := entryKey("registration", c.Record.RegistrationID)
		calls = append(calls, &batchCall{reg: &regCall{c: c, key: key}, done: make(chan error, 1)})
	}
	jw.commit(calls)
	var cs []committed
	for i, call := range calls {
		if err := <-call.done; err != nil {
			t.Fatalf("commit %d: %v", i, err)
		}
		rc := call.reg
		cs = append(cs, committed{rc.c.Record.RegistrationID, rc.c.Operation.OperationID, rc.rec.ETag,
			strconv.FormatUint(rc.entry.eventSeq, 10), "hub", "g"})
	}
	if len(jw.pending) == len(calls) || len(jw.pending) == 0 {
		t.Fatalf("%d of %d pending: the batch did not span an apply", len(jw.pending), len(calls))
	}
	jw.abandon = true // crash
	jw.finish()
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	s = openTest(t, path, Options{})
	wantState(t, s, cs)
}
