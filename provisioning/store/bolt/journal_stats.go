package bolt

import (
	"sync/atomic"
	"time"
)

// JournalStats is a snapshot of the registration journal's counters
// (journal.go), for operators: whether registrations reach bbolt, and what
// the journal's write and fdatasync cost. Counters only grow while the
// store is open; they start at zero on every Open.
//
// An operator reads them together: Pending that grows and ApplyFailures
// that move mean bbolt refuses the applies (disk full, I/O errors), and
// every write other than a registration commit fails closed until one
// succeeds; SyncTime/Appends is the disk's fdatasync latency, which every
// device waits for once per registration.
type JournalStats struct {
	// Enabled says registration commits go through the journal. Without
	// it (a test knob of the package) every other field stays zero.
	Enabled bool
	// Appends counts the write+fdatasync cycles that made registrations
	// durable: one for all the commits queued together.
	Appends uint64
	// Entries counts the registrations made durable by those appends (and
	// answered); Entries/Appends is how many shared one fdatasync.
	Entries uint64
	// AppendFailures counts appends whose write or fdatasync failed: the
	// registrations of each were answered with an error.
	AppendFailures uint64
	// SyncTime is the time spent in fdatasync of the journal, summed.
	SyncTime time.Duration
	// Pending is how many journaled registrations are not yet applied to
	// bbolt now (they are served from memory until then).
	Pending int
	// Applies counts the transactions that applied pending registrations
	// to bbolt, the one replaying recovered records at Open included.
	Applies uint64
	// ApplyFailures counts applies that failed; the registrations stay
	// pending and in the journal, and the next write tries again.
	ApplyFailures uint64
	// ApplyTime is the time spent in apply transactions, failed ones
	// included, summed.
	ApplyTime time.Duration
	// DirectCommits counts registration commits sent straight to bbolt,
	// in a transaction of their own, because their record would not fit
	// in the journal (a payload near the MQTT packet limit): each costs
	// bbolt's page writes and fsyncs instead of one append.
	DirectCommits uint64
	// Recovered counts the registrations replayed from the journal at
	// Open: acknowledged before the previous process ended without
	// applying them.
	Recovered uint64
}

// journalCounters are the atomics behind JournalStats. Only the writer
// goroutine updates them and scrapes read them from anywhere: atomics, so
// that no lock is taken on the commit path.
type journalCounters struct {
	appends, entries, appendFailures atomic.Uint64
	syncNanos                        atomic.Int64
	pending                          atomic.Int64
	applies, applyFailures           atomic.Uint64
	applyNanos                       atomic.Int64
	direct, recovered                atomic.Uint64
}

// JournalStats returns the registration journal's counters. It is cheap
// (atomic loads) and safe to call at any time, after Close too. The
// fields are read one by one, so a snapshot taken while the writer works
// may be off by the commits in flight.
func (s *Store) JournalStats() JournalStats {
	c := &s.jstats
	return JournalStats{
		Enabled:        s.writer.jw != nil,
		Appends:        c.appends.Load(),
		Entries:        c.entries.Load(),
		AppendFailures: c.appendFailures.Load(),
		SyncTime:       time.Duration(c.syncNanos.Load()),
		Pending:        int(c.pending.Load()),
		Applies:        c.applies.Load(),
		ApplyFailures:  c.applyFailures.Load(),
		ApplyTime:      time.Duration(c.applyNanos.Load()),
		DirectCommits:  c.direct.Load(),
		Recovered:      c.recovered.Load(),
	}
}
