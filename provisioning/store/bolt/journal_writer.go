package bolt

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/dpsbroker/dpsbroker/provisioning"
	bolt "go.etcd.io/bbolt"
)

const (
	// applyEntries is how many journaled registrations are applied to
	// bbolt together: enough that the B+tree work and bbolt's fsyncs cost
	// little per registration, few enough that the overlay stays small.
	applyEntries = 256
	// applyInterval bounds how long a journaled registration waits for
	// its apply when few arrive.
	applyInterval = time.Second
)

// regCall is a registration commit handed to the writer. The writer sets
// the outputs before it answers the call.
type regCall struct {
	c   *provisioning.RegistrationCommit
	key []byte

	entry    *journalEntry                   // what was journaled
	rec      *provisioning.RegistrationState // the stamped record entry.record encodes
	mismatch error                           // the precondition failed: nothing written
	tooLarge bool                            // commit it straight into bbolt instead
}

// overlay holds the registrations and operations that are journaled but
// not yet applied to bbolt: reads look here first. Only the writer changes
// it; entries are never modified once in it.
type overlay struct {
	mu   sync.RWMutex
	regs map[string]*journalEntry // by registration key: the newest
	ops  map[string]*journalEntry // by operation ID
}

func (o *overlay) registration(key []byte) []byte {
	o.mu.RLock()
	defer o.mu.RUnlock()
	if e := o.regs[string(key)]; e != nil {
		return e.record
	}
	return nil
}

func (o *overlay) operation(id string) []byte {
	o.mu.RLock()
	defer o.mu.RUnlock()
	if e := o.ops[id]; e != nil {
		return e.op
	}
	return nil
}

// journalWriter is the writer goroutine's journal state (see journal.go).
type journalWriter struct {
	db        *bolt.DB
	j         *journal
	ov        *overlay
	log       *slog.Logger
	now       func() time.Time
	maxEvents uint64

	pending []*journalEntry // journaled, not applied, in order
	timer   *time.Timer     // runs while pending is not empty
	// seq and eventSeq are the last etag and event sequence numbers
	// handed out; seqKnown says they are current (writes that bypass the
	// journal take numbers from bbolt).
	seq, eventSeq uint64
	seqKnown      bool
	// abandoned is the highest seq of records whose append failed: never
	// acknowledged, so the next apply marker covers them.
	abandoned uint64
	// abandon skips the final apply on close (tests: a crash).
	abandon bool
	// stats counts pending entries, applies and recoveries (JournalStats).
	stats *journalCounters
}

// due is the channel that fires when pending has waited long enough; nil
// (never) when nothing is pending or there is no journal.
func (w *journalWriter) due() <-chan time.Time {
	if w == nil || len(w.pending) == 0 {
		return nil
	}
	return w.timer.C
}

// loadSeqs reads the sequence numbers from bbolt when they may have moved.
func (w *journalWriter) loadSeqs() error {
	if w.seqKnown {
		return nil
	}
	err := w.db.View(func(tx *bolt.Tx) error {
		w.seq = tx.Bucket(bucketMeta).Sequence()
		w.eventSeq = tx.Bucket(bucketEvents).Sequence()
		return nil
	})
	if err != nil {
		return unavailable(err)
	}
	w.seqKnown = true
	return nil
}

// storedStamps is what a commit needs of the record it replaces.
type storedStamps struct {
	ETag    string     `json:"etag"`
	Created *time.Time `json:"createdDateTimeUtc"`
	Group   string     `json:"enrollmentGroupId"`
}

// previous finds the stamps of the record key holds now: in this batch,
// in the overlay, or in bbolt.
func (w *journalWriter) previous(key []byte, staged map[string]*journalEntry) (st storedStamps, exists bool, err error) {
	e := staged[string(key)]
	if e == nil {
		e = w.ov.regs[string(key)] // only this goroutine writes the map
	}
	if e != nil {
		created := time.Unix(0, e.created).UTC()
		return storedStamps{ETag: etagFor(e.seq), Created: &created, Group: e.newGroup}, true, nil
	}
	err = w.db.View(func(tx *bolt.Tx) error {
		raw := tx.Bucket(bucketRegistrations).Get(key)
		if raw == nil {
			return nil
		}
		exists = true
		if err := json.Unmarshal(raw, &st); err != nil {
			return fmt.Errorf("decode stored entry: %w", err)
		}
		return nil
	})
	return st, exists, err
}

// commit journals the registration commits of calls: one write and one
// fdatasync for all of them, then they are answered.
func (w *journalWriter) commit(calls []*batchCall) {
	if err := w.loadSeqs(); err != nil {
		for _, c := range calls {
			c.done <- err
		}
		return
	}
	now := w.now().UTC()
	staged := make(map[string]*journalEntry, len(calls))
	var entries []*journalEntry
	var journaled []*batchCall
	for _, call := range calls {
		e, err := w.entryFor(call.reg, now, staged)
		switch {
		case err != nil:
			call.done <- err
		case e == nil: // precondition failed, or too large for the journal
			call.done <- nil
		default:
			staged[string(e.key)] = e
			entries = append(entries, e)
			journaled = append(journaled, call)
		}
	}
	// Write them in as few appends as fit in the rest of the journal;
	// when the next one does not fit, apply and start a new cycle.
	for len(entries) > 0 {
		n, room := 0, journalSize-w.j.off
		for _, e := range entries {
			if room -= int64(e.encodedSize()); room < 0 {
				break
			}
			n++
		}
		var err error
		if n == 0 {
			err = w.apply()
		} else {
			err = w.j.append(entries[:n])
		}
		if err != nil {
			err = unavailable(err)
			w.log.Error("bolt store: registration journal failed", "err", err)
			w.abandoned = max(w.abandoned, entries[len(entries)-1].seq)
			for _, c := range journaled {
				c.done <- err
			}
			return
		}
		w.accept(entries[:n], journaled[:n])
		entries, journaled = entries[n:], journaled[n:]
	}
	if len(w.pending) >= applyEntries {
		w.applyLogged()
	}
}

// accept makes journaled entries readable and pending, and answers their
// calls.
func (w *journalWriter) accept(entries []*journalEntry, calls []*batchCall) {
	if len(entries) == 0 {
		return
	}
	w.ov.mu.Lock()
	for _, e := range entries {
		w.ov.regs[string(e.key)] = e
		w.ov.ops[string(e.opID)] = e
	}
	w.ov.mu.Unlock()
	if len(w.pending) == 0 {
		w.timer.Reset(applyInterval)
	}
	w.pending = append(w.pending, entries...)
	w.stats.pending.Store(int64(len(w.pending)))
	for _, c := range calls {
		c.done <- nil
	}
}

// entryFor stamps and encodes one commit, as putTx, CommitRegistration's
// transaction and appendEventTx would. It returns nil when the commit
// writes nothing (rc.mismatch) or must go straight to bbolt (rc.tooLarge).
// Sequence numbers are taken only once nothing can fail.
func (w *journalWriter) entryFor(rc *regCall, now time.Time, staged map[string]*journalEntry) (*journalEntry, error) {
	c := rc.c
	id := c.Record.RegistrationID
	prev, exists, err := w.previous(rc.key, staged)
	if err != nil {
		return nil, err
	}
	if c.CreateOnly && exists {
		rc.mismatch = fmt.Errorf("registration %q already exists: %w", id, provisioning.ErrPreconditionFailed)
		return nil, nil
	}
	if err := checkMatch("registration", id, exists, prev.ETag, c.IfMatch); err != nil {
		rc.mismatch = err
		return nil, nil
	}
	created := now
	if prev.Created != nil {
		created = *prev.Created
	}
	rec := *c.Record
	registrations.stamps(&rec).set(w.seq+1, created, now)
	data, err := json.Marshal(&rec)
	if err != nil {
		return nil, fmt.Errorf("encode registration: %w", err)
	}
	op, err := encodeOperation(c.Operation, data)
	if err != nil {
		return nil, err
	}
	ev := *c.Event
	ev.ID = strconv.FormatUint(w.eventSeq+1, 10)
	evData, err := json.Marshal(&ev)
	if err != nil {
		return nil, fmt.Errorf("encode event: %w", err)
	}
	e := &journalEntry{
		seq: w.seq + 1, key: rc.key, record: data, oldGroup: prev.Group, newGroup: rec.EnrollmentGroupID,
		opID: []byte(c.Operation.OperationID), op: op, expires: c.Operation.Expires.UnixNano(),
		eventSeq: w.eventSeq + 1, event: evData,
		created: created.UnixNano(),
	}
	if e.encodedSize() > maxJournalRecord {
		rc.tooLarge = true
		w.stats.direct.Add(1)
		return nil, nil
	}
	w.seq++
	w.eventSeq++
	rc.entry, rc.rec = e, &rec
	return e, nil
}

// apply writes every pending entry into bbolt in one transaction, with
// the sequence numbers handed out and the journal's apply marker, then
// empties the overlay and starts a new journal cycle.
func (w *journalWriter) apply() error {
	if len(w.pending) == 0 {
		return nil
	}
	start := time.Now()
	err := w.db.Update(func(tx *bolt.Tx) error {
		return w.applyTx(tx, w.pending)
	})
	w.stats.applyNanos.Add(int64(time.Since(start)))
	if err != nil {
		w.stats.applyFailures.Add(1)
		return unavailable(fmt.Errorf("applying the registration journal: %w", err))
	}
	w.stats.applies.Add(1)
	w.stats.pending.Store(0)
	w.ov.mu.Lock()
	for _, e := range w.pending {
		if w.ov.regs[string(e.key)] == e {
			delete(w.ov.regs, string(e.key))
		}
		if w.ov.ops[string(e.opID)] == e {
			delete(w.ov.ops, string(e.opID))
		}
	}
	w.ov.mu.Unlock()
	clear(w.pending)
	w.pending = w.pending[:0]
	w.j.reset()
	w.timer.Stop()
	return nil
}

// applyLogged is apply where no caller waits for the outcome. A failure
// leaves the entries pending (and in the journal): the next apply tries
// again, and until one succeeds other writes fail closed.
func (w *journalWriter) applyLogged() {
	if err := w.apply(); err != nil {
		w.log.Error("bolt store: applying the registration journal failed; retrying with the next write", "err", err)
		w.timer.Reset(applyInterval)
	}
}

// applyTx writes entries, in order, and the marker: every journal record
// with a sequence number up to it is in bbolt or was never acknowledged,
// so recovery skips it. The marker is not w.seq: a commit that has to
// apply to make room in the journal has taken numbers for records it has
// yet to write.
func (w *journalWriter) applyTx(tx *bolt.Tx, entries []*journalEntry) error {
	regs, idx := tx.Bucket(bucketRegistrations), tx.Bucket(bucketRegByGroup)
	events := appendBucket(tx, bucketEvents)
	for _, e := range entries {
		if err := regs.Put(e.key, e.record); err != nil {
			return err
		}
		if err := moveGroupIndex(idx, e.key, e.oldGroup, e.newGroup); err != nil {
			return err
		}
		if err := putOperationTx(tx, string(e.opID), time.Unix(0, e.expires), e.op); err != nil {
			return err
		}
		if err := events.Put(seqKey(e.eventSeq), e.event); err != nil {
			return err
		}
	}
	meta := tx.Bucket(bucketMeta)
	if meta.Sequence() < w.seq {
		if err := meta.SetSequence(w.seq); err != nil {
			return err
		}
	}
	if events.Sequence() < w.eventSeq {
		if err := events.SetSequence(w.eventSeq); err != nil {
			return err
		}
	}
	marker := max(entries[len(entries)-1].seq, w.abandoned)
	if err := meta.Put(journalAppliedKey, seqKey(marker)); err != nil {
		return err
	}
	return trimEvents(events, events.Sequence(), w.maxEvents)
}

// recover applies what the journal holds beyond the last apply: the
// registrations acknowledged before the process ended.
func (w *journalWriter) recover(entries []*journalEntry) error {
	if len(entries) == 0 {
		return nil
	}
	if err := w.loadSeqs(); err != nil {
		return err
	}
	for _, e := range entries {
		w.seq, w.eventSeq = max(w.seq, e.seq), max(w.eventSeq, e.eventSeq)
	}
	w.pending = entries
	w.stats.pending.Store(int64(len(entries)))
	if err := w.apply(); err != nil {
		return err
	}
	w.stats.recovered.Add(uint64(len(entries)))
	w.log.Info("bolt store: recovered journaled registrations", "count", len(entries))
	return nil
}

// finish applies what is pending when the store closes, so that a clean
// shutdown leaves nothing to recover, and closes the journal.
func (w *journalWriter) finish() {
	if !w.abandon {
		if err := w.apply(); err != nil {
			w.log.Error("bolt store: applying the registration journal on close failed; it is recovered on the next open", "err", err)
		}
	}
	w.timer.Stop()
	if err := w.j.close(); err != nil {
		w.log.Warn("bolt store: closing the registration journal", "err", err)
	}
}

// appliedMarker is the journal apply marker stored in bbolt (0: none).
func appliedMarker(db *bolt.DB) (uint64, error) {
	var applied uint64
	err := db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketMeta).Get(journalAppliedKey); len(v) == 8 {
			applied = binary.BigEndian.Uint64(v)
		}
		return nil
	})
	return applied, err
}
