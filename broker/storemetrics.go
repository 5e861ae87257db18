package broker

import (
	"context"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dpsbroker/dpsbroker/provisioning"
	"github.com/dpsbroker/dpsbroker/provisioning/store/bolt"
)

// meteredStore times every store call for the store_call_seconds
// histogram. It passes values through untouched, so the sharing rules of
// the wrapped store (ListEnrollmentGroups snapshots) still hold.
type meteredStore struct {
	provisioning.Store
	m *metrics
}

func storeResult(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, provisioning.ErrNotFound):
		return "not_found"
	case errors.Is(err, provisioning.ErrPreconditionFailed):
		return "precondition_failed"
	}
	return "error"
}

func (s *meteredStore) done(op string, start time.Time, err error) {
	s.m.observeStore(op, err, time.Since(start))
}

func (s *meteredStore) GetEnrollment(ctx context.Context, registrationID string) (*provisioning.IndividualEnrollment, error) {
	start := time.Now()
	v, err := s.Store.GetEnrollment(ctx, registrationID)
	s.done("get_enrollment", start, err)
	return v, err
}

func (s *meteredStore) PutEnrollment(ctx context.Context, e *provisioning.IndividualEnrollment, ifMatch string) (*provisioning.IndividualEnrollment, error) {
	start := time.Now()
	v, err := s.Store.PutEnrollment(ctx, e, ifMatch)
	s.done("put_enrollment", start, err)
	return v, err
}

func (s *meteredStore) DeleteEnrollment(ctx context.Context, registrationID, ifMatch string) error {
	start := time.Now()
	err := s.Store.DeleteEnrollment(ctx, registrationID, ifMatch)
	s.done("delete_enrollment", start, err)
	return err
}

func (s *meteredStore) GetEnrollmentGroup(ctx context.Context, groupID string) (*provisioning.EnrollmentGroup, error) {
	start := time.Now()
	v, err := s.Store.GetEnrollmentGroup(ctx, groupID)
	s.done("get_group", start, err)
	return v, err
}

func (s *meteredStore) PutEnrollmentGroup(ctx context.Context, g *provisioning.EnrollmentGroup, ifMatch string) (*provisioning.EnrollmentGroup, error) {
	start := time.Now()
	v, err := s.Store.PutEnrollmentGroup(ctx, g, ifMatch)
	s.done("put_group", start, err)
	return v, err
}

func (s *meteredStore) DeleteEnrollmentGroup(ctx context.Context, groupID, ifMatch string) error {
	start := time.Now()
	err := s.Store.DeleteEnrollmentGroup(ctx, groupID, ifMatch)
	s.done("delete_group", start, err)
	return err
}

func (s *meteredStore) ListEnrollmentGroups(ctx context.Context) ([]*provisioning.EnrollmentGroup, error) {
	start := time.Now()
	v, err := s.Store.ListEnrollmentGroups(ctx)
	s.done("list_groups", start, err)
	return v, err
}

func (s *meteredStore) GroupsByCertificate(ctx context.Context, sha256 [32]byte) ([]*provisioning.EnrollmentGroup, error) {
	start := time.Now()
	v, err := s.Store.GroupsByCertificate(ctx, sha256)
	s.done("groups_by_certificate", start, err)
	return v, err
}

func (s *meteredStore) GetCACertificate(ctx context.Context, name string) (*provisioning.CACertificate, error) {
	start := time.Now()
	v, err := s.Store.GetCACertificate(ctx, name)
	s.done("get_ca", start, err)
	return v, err
}

func (s *meteredStore) PutCACertificate(ctx context.Context, c *provisioning.CACertificate, ifMatch string) (*provisioning.CACertificate, error) {
	start := time.Now()
	v, err := s.Store.PutCACertificate(ctx, c, ifMatch)
	s.done("put_ca", start, err)
	return v, err
}

func (s *meteredStore) DeleteCACertificate(ctx context.Context, name, ifMatch string) error {
	start := time.Now()
	err := s.Store.DeleteCACertificate(ctx, name, ifMatch)
	s.done("delete_ca", start, err)
	return err
}

func (s *meteredStore) ListCACertificates(ctx context.Context) ([]*provisioning.CACertificate, error) {
	start := time.Now()
	v, err := s.Store.ListCACertificates(ctx)
	s.done("list_cas", start, err)
	return v, err
}

func (s *meteredStore) GetRegistration(ctx context.Context, registrationID string) (*provisioning.RegistrationState, error) {
	start := time.Now()
	v, err := s.Store.GetRegistration(ctx, registrationID)
	s.done("get_registration", start, err)
	return v, err
}

func (s *meteredStore) PutRegistration(ctx context.Context, r *provisioning.RegistrationState, ifMatch string) (*provisioning.RegistrationState, error) {
	start := time.Now()
	v, err := s.Store.PutRegistration(ctx, r, ifMatch)
	s.done("put_registration", start, err)
	return v, err
}

func (s *meteredStore) DeleteRegistration(ctx context.Context, registrationID, ifMatch string) error {
	start := time.Now()
	err := s.Store.DeleteRegistration(ctx, registrationID, ifMatch)
	s.done("delete_registration", start, err)
	return err
}

func (s *meteredStore) PutOperation(ctx context.Context, op *provisioning.Operation) error {
	start := time.Now()
	err := s.Store.PutOperation(ctx, op)
	s.done("put_operation", start, err)
	return err
}

func (s *meteredStore) GetOperation(ctx context.Context, operationID string) (*provisioning.Operation, error) {
	start := time.Now()
	v, err := s.Store.GetOperation(ctx, operationID)
	s.done("get_operation", start, err)
	return v, err
}

func (s *meteredStore) AppendEvent(ctx context.Context, ev *provisioning.Event) (string, error) {
	start := time.Now()
	v, err := s.Store.AppendEvent(ctx, ev)
	s.done("append_event", start, err)
	return v, err
}

func (s *meteredStore) PutChallenge(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	start := time.Now()
	err := s.Store.PutChallenge(ctx, key, value, ttl)
	s.done("put_challenge", start, err)
	return err
}

func (s *meteredStore) TakeChallenge(ctx context.Context, key string) ([]byte, error) {
	start := time.Now()
	v, err := s.Store.TakeChallenge(ctx, key)
	s.done("take_challenge", start, err)
	return v, err
}

func (s *meteredStore) ListEnrollments(ctx context.Context, cursor string, limit int) ([]*provisioning.IndividualEnrollment, string, error) {
	start := time.Now()
	page, next, err := s.Store.ListEnrollments(ctx, cursor, limit)
	s.done("list_enrollments", start, err)
	return page, next, err
}

func (s *meteredStore) ListRegistrations(ctx context.Context, groupID, cursor string, limit int) ([]*provisioning.RegistrationState, string, error) {
	start := time.Now()
	page, next, err := s.Store.ListRegistrations(ctx, groupID, cursor, limit)
	s.done("list_registrations", start, err)
	return page, next, err
}

func (s *meteredStore) ReadEvents(ctx context.Context, afterID string, limit int) ([]*provisioning.Event, error) {
	start := time.Now()
	evs, err := s.Store.ReadEvents(ctx, afterID, limit)
	s.done("read_events", start, err)
	return evs, err
}

func (s *meteredStore) CommitRegistration(ctx context.Context, c *provisioning.RegistrationCommit) (*provisioning.RegistrationState, string, error) {
	start := time.Now()
	stored, id, err := s.Store.CommitRegistration(ctx, c)
	s.done("commit_registration", start, err)
	return stored, id, err
}

// journalSource is a store with a registration journal: the embedded
// store. The Redis store has none and gets no journal series.
type journalSource interface {
	JournalStats() bolt.JournalStats
}

// journalCollector exports the embedded store's journal counters, read at
// scrape time: the store keeps them as atomics, so the commit path pays
// nothing for the metrics.
type journalCollector struct {
	src journalSource

	appends, entries, appendFailures, syncSeconds *prometheus.Desc
	pending, applies, applyFailures, applySeconds *prometheus.Desc
	directCommits, recovered                      *prometheus.Desc
}

func newJournalCollector(src journalSource) *journalCollector {
	desc := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName("dpsbroker", "journal", name), help, nil, nil)
	}
	return &journalCollector{
		src: src,
		appends: desc("appends_total",
			"Registration journal appends: one write and one fdatasync for all the registration commits queued together."),
		entries: desc("entries_total",
			"Registrations made durable in the journal and answered; entries_total/appends_total is how many devices shared one fdatasync."),
		appendFailures: desc("append_failures_total",
			"Journal writes or fdatasyncs that failed; their devices got an error. Any increase means the data disk is failing or full."),
		syncSeconds: desc("sync_seconds_total",
			"Time spent in the journal's fdatasync; rate(sync_seconds_total)/rate(appends_total) is the disk's sync latency, which every registering device waits for."),
		pending: desc("pending_entries",
			"Journaled registrations not yet applied to the database. Normally below 256 and back to 0 within a second of quiet; growing without bound means applies are failing (see apply_failures_total)."),
		applies: desc("applies_total",
			"Transactions that applied pending journaled registrations to the database (the replay at startup included)."),
		applyFailures: desc("apply_failures_total",
			"Journal applies that failed. The registrations stay pending and durable in the journal, and writes other than registrations fail until an apply succeeds: check the data disk."),
		applySeconds: desc("apply_seconds_total",
			"Time spent in journal apply transactions, failed ones included; divided by applies_total, the time other writes may wait for an apply."),
		directCommits: desc("direct_commits_total",
			"Registration commits too large for the journal, written straight to the database at the full cost of a database transaction each."),
		recovered: desc("recovered_entries_total",
			"Registrations replayed from the journal at startup: acknowledged before the previous process stopped without applying them (a crash or kill, not a clean shutdown)."),
	}
}

// Describe implements prometheus.Collector.
func (c *journalCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		c.appends, c.entries, c.appendFailures, c.syncSeconds, c.pending,
		c.applies, c.applyFailures, c.applySeconds, c.directCommits, c.recovered,
	} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *journalCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.src.JournalStats()
	counter := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v)
	}
	counter(c.appends, float64(st.Appends))
	counter(c.entries, float64(st.Entries))
	counter(c.appendFailures, float64(st.AppendFailures))
	counter(c.syncSeconds, st.SyncTime.Seconds())
	ch <- prometheus.MustNewConstMetric(c.pending, prometheus.GaugeValue, float64(st.Pending))
	counter(c.applies, float64(st.Applies))
	counter(c.applyFailures, float64(st.ApplyFailures))
	counter(c.applySeconds, st.ApplyTime.Seconds())
	counter(c.directCommits, float64(st.DirectCommits))
	counter(c.recovered, float64(st.Recovered))
}
