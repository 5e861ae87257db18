// Package bolt is the embedded single-node store: provisioning.Store on one
// bbolt file, durable across restarts and needing no other process.
//
// Layout: one bucket per entry type with JSON values keyed by the lower-cased
// ID (provisioning.RegistrationKey), plus index buckets maintained in the same
// write transaction as the entries they index: certificate thumbprint ->
// group and CA name, CA reference -> group, group -> registration, expiry
// time -> operation or challenge. bbolt runs one writer at a time, so the
// etag compare-and-set is a plain read-check-write inside the transaction.
//
// Registration commits, the writes devices wait for, go through an
// append-only journal and are applied to bbolt in batches (journal.go).
//
// Etags are opaque: base64 of a store-wide sequence number that only grows,
// so an etag is never reused, even after a delete and re-create.
//
// GroupsByCertificate joins at read time: the thumbprint finds groups whose
// signing certificate has it, and CA entries whose certificate has it, whose
// names then find the groups that reference them. Uploading, replacing or
// deleting a CA certificate therefore takes effect without rewriting groups.
package bolt

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/dpsbroker/dpsbroker/provisioning"
	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// ErrInUse is returned by Open when another process holds the file lock.
var ErrInUse = errors.New("data directory is in use by another dpsbroker process")

// Defaults for zero Options fields.
const (
	DefaultTimeout = time.Second
	// DefaultMaxEvents is the Redis store's default too: the log is a
	// recent history for operators and event consumers, not an archive. An
	// event takes about 0.5 KB in the file, so 100k keep it near 50 MB,
	// where a million made the log most of a single node's file.
	DefaultMaxEvents = 100_000

	defaultSweepInterval = 30 * time.Second
	defaultWatchBuffer   = 1024
	// sweepBatch bounds one sweeper transaction so that it never holds the
	// single bbolt writer for long: registrations wait behind it. 5000
	// deletes took 70-85 ms in a file of 50k registrations
	// (BenchmarkCommitRegistrationLargeDB, sweep-ms); 1000 keep the stall
	// near the cost of a few commits.
	sweepBatch = 1000
	// maxKeyLen keeps keys far below bbolt's limit and refuses absurd IDs.
	maxKeyLen = 1024
)

// Options configures Open. Zero fields take the defaults.
type Options struct {
	// Timeout bounds the wait for the file lock (default 1 s). bbolt would
	// otherwise wait forever when another process has the file open.
	Timeout time.Duration
	// MaxEvents is how many events the log keeps; older ones are trimmed
	// (default DefaultMaxEvents, 100,000).
	MaxEvents int
	// Logger receives sweeper and watcher diagnostics (default: discard).
	Logger *slog.Logger
	// Now is the clock for timestamps and expiry (default time.Now).
	Now func() time.Time

	// Test knobs: how often expired entries are swept and how many changes
	// a watcher may have pending before it gets ChangeAll instead.
	sweepInterval time.Duration
	watchBuffer   int
	// syncFreelist restores bbolt's default freelist handling (an array
	// written on every commit), for the benchmark that compares the two.
	syncFreelist bool
	// noJournal commits registrations straight into bbolt, for the
	// benchmark that compares the two.
	noJournal bool
}

// Store is provisioning.Store on a bbolt file. It is safe for concurrent
// use. Close releases the file.
type Store struct {
	db        *bolt.DB
	log       *slog.Logger
	now       func() time.Time
	maxEvents uint64

	watch  watchers
	writer batcher
	// overlay holds journaled registrations not yet in bbolt (journal.go);
	// empty without a journal.
	overlay *overlay
	// jstats counts the journal's work for JournalStats.
	jstats journalCounters

	// groupMu guards the shared ListEnrollmentGroups snapshot. groupGen
	// counts committed group writes, so that a snapshot built from a read
	// transaction that raced a write is not kept.
	groupMu  sync.Mutex
	groupGen uint64
	groups   []*provisioning.EnrollmentGroup
	groupsOK bool

	stop      context.CancelFunc
	done      sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
}

var _ provisioning.Store = (*Store)(nil)

// Bucket names.
var (
	bucketMeta          = []byte("meta")
	bucketEnrollments   = []byte("enrollments")
	bucketGroups        = []byte("groups")
	bucketGroupThumbs   = []byte("group_thumbprints") // thumbprint|group
	bucketGroupCARefs   = []byte("group_ca_refs")     // len|ca name|group
	bucketCAs           = []byte("ca_certificates")
	bucketCAThumbs      = []byte("ca_thumbprints") // thumbprint|ca name
	bucketRegistrations = []byte("registrations")
	bucketRegByGroup    = []byte("registrations_by_group") // len|group|registration
	bucketOperations    = []byte("operations")
	bucketChallenges    = []byte("challenges")
	bucketExpiry        = []byte("expiry") // unix nanos|kind|key
	bucketEvents        = []byte("events") // big-endian sequence

	allBuckets = [][]byte{
		bucketMeta, bucketEnrollments, bucketGroups, bucketGroupThumbs, bucketGroupCARefs,
		bucketCAs, bucketCAThumbs, bucketRegistrations, bucketRegByGroup,
		bucketOperations, bucketChallenges, bucketExpiry, bucketEvents,
	}
)

// Open opens or creates the store file at path. It fails with ErrInUse
// when another process holds the file for longer than opts.Timeout.
func Open(path string, opts Options) (*Store, error) {
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.MaxEvents <= 0 {
		opts.MaxEvents = DefaultMaxEvents
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.sweepInterval <= 0 {
		opts.sweepInterval = defaultSweepInterval
	}
	if opts.watchBuffer <= 0 {
		opts.watchBuffer = defaultWatchBuffer
	}
	db, err := openDB(path, opts)
	if errors.Is(err, berrors.ErrTimeout) {
		return nil, fmt.Errorf("open %s: %w (file lock not acquired within %v)", path, ErrInUse, opts.Timeout)
	}
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, name := range allBuckets {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return fmt.Errorf("create bucket %s: %w", name, err)
			}
		}
		return nil
	})
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	ctx, stop := context.WithCancel(context.Background())
	s := &Store{
		db:        db,
		log:       opts.Logger,
		now:       opts.Now,
		maxEvents: uint64(opts.MaxEvents),
		stop:      stop,
	}
	s.writer = batcher{db: db, reqs: make(chan *batchCall), stopped: ctx.Done()}
	s.overlay = &overlay{regs: map[string]*journalEntry{}, ops: map[string]*journalEntry{}}
	if !opts.noJournal {
		if s.writer.jw, err = openJournalWriter(db, path+journalSuffix, s, opts.Logger); err != nil {
			stop()
			_ = db.Close()
			return nil, fmt.Errorf("open %s: %w", path, err)
		}
	}
	s.watch.init(ctx, opts.watchBuffer, opts.Logger)
	s.done.Go(s.writer.loop)
	s.done.Go(func() { s.sweepLoop(ctx, opts.sweepInterval) })
	return s, nil
}

// openDB opens the bbolt file.
//
// The freelist is not written to the file (NoFreelistSync) and is kept as
// a map. bbolt's default writes the whole list of free pages on every
// commit and searches it as an array; a broker's file has many free pages
// (operations expire and are swept, events are trimmed), so every
// registration commit, and every registration waiting on it, paid for
// them (BenchmarkCommitRegistrationLargeDB: see BENCHMARKS.md).
//
// Durability is unchanged: data and meta pages are still fsynced on every
// commit. The meta page then records "no freelist", and Open rebuilds the
// list by walking every reachable page of the file (bbolt's freepages),
// which takes time in proportion to the file's size. A file written this
// way opens fine with bbolt's defaults too: bbolt rebuilds the list and
// writes it back on that open.
func openDB(path string, opts Options) (db *bolt.DB, err error) {
	bo := &bolt.Options{Timeout: opts.Timeout, NoFreelistSync: true, FreelistType: bolt.FreelistMapType}
	if opts.syncFreelist {
		bo.NoFreelistSync, bo.FreelistType = false, bolt.FreelistArrayType
	}
	// Rebuilding the freelist panics on a corrupt page tree rather than
	// returning an error: fail closed with an error instead.
	defer func() {
		if r := recover(); r != nil {
			db, err = nil, fmt.Errorf("%w: damaged file: %v", provisioning.ErrStoreUnavailable, r)
		}
	}()
	return bolt.Open(path, 0o600, bo)
}

// journalSuffix names the registration journal: the store file's name
// with this appended (journal.go).
const journalSuffix = "-journal"

// openJournalWriter opens the journal of the store file, applies what it
// holds beyond the last apply, and returns the writer's journal state.
func openJournalWriter(db *bolt.DB, path string, s *Store, log *slog.Logger) (*journalWriter, error) {
	applied, err := appliedMarker(db)
	if err != nil {
		return nil, err
	}
	j, entries, err := openJournal(path, applied, &s.jstats)
	if err != nil {
		return nil, err
	}
	timer := time.NewTimer(applyInterval)
	timer.Stop()
	jw := &journalWriter{db: db, j: j, ov: s.overlay, log: log, now: s.now, maxEvents: s.maxEvents, timer: timer, stats: &s.jstats}
	if err := jw.recover(entries); err != nil {
		_ = j.close()
		return nil, fmt.Errorf("recovering the registration journal: %w", err)
	}
	return jw, nil
}

// flushJournal applies the journal to bbolt, for reads that scan bbolt
// (listings, the event log) rather than look up one key.
func (s *Store) flushJournal(ctx context.Context) error {
	if s.writer.jw == nil {
		return ctx.Err()
	}
	handed, err := s.writer.call(ctx, &batchCall{flush: true})
	if err != nil && (handed || err != ctx.Err()) {
		err = unavailable(err)
	}
	return err
}

// Close stops the sweeper, ends every watch and closes the file.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.stop()
		s.done.Wait()
		s.watch.wait()
		s.closeErr = s.db.Close()
	})
	return s.closeErr
}

// update runs fn in a write transaction, which it shares with concurrent
// writes (see batcher: fn may run more than once and must set its outputs
// afresh each time). Errors from fn pass through unchanged, and so does
// the end of ctx before fn ran; failures of bbolt itself (closed database,
// I/O on commit) wrap provisioning.ErrStoreUnavailable so that callers
// fail closed.
func (s *Store) update(ctx context.Context, fn func(tx *bolt.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	var fnErr error
	handed, err := s.writer.do(ctx, func(tx *bolt.Tx) error {
		fnErr = fn(tx)
		return fnErr
	})
	if !handed && err == ctx.Err() {
		return err
	}
	return s.classify(err, fnErr)
}

// view runs fn in a read transaction, with the error rules of update.
func (s *Store) view(ctx context.Context, fn func(tx *bolt.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	var fnErr error
	err := s.db.View(func(tx *bolt.Tx) error {
		fnErr = fn(tx)
		return fnErr
	})
	return s.classify(err, fnErr)
}

func (s *Store) classify(err, fnErr error) error {
	if err == nil || (fnErr != nil && err == fnErr) {
		return err
	}
	return unavailable(err)
}

// unavailable marks a failure of the store itself (bbolt, the journal, a
// closed store) as provisioning.ErrStoreUnavailable, once.
func unavailable(err error) error {
	if errors.Is(err, provisioning.ErrStoreUnavailable) {
		return err
	}
	return fmt.Errorf("%w: bolt: %w", provisioning.ErrStoreUnavailable, err)
}
