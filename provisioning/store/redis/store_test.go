package redisstore

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dpsbroker/dpsbroker/provisioning"
	"github.com/dpsbroker/dpsbroker/provisioning/store/redistest"
	"github.com/dpsbroker/dpsbroker/provisioning/store/storetest"
)

func TestMain(m *testing.M) { redistest.Main(m) }

var scopeSeq atomic.Int64

// uniqueScope gives each store its own keys and its own change channel
// (channels are shared by every database of a server).
func uniqueScope() string { return fmt.Sprintf("t%d", scopeSeq.Add(1)) }

// counter is a go-redis hook counting commands sent (round trips: the
// store never pipelines).
type counter struct{ n atomic.Int64 }

func (c *counter) DialHook(next redis.DialHook) redis.DialHook { return next }
func (c *counter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		c.n.Add(1)
		return next(ctx, cmd)
	}
}
func (c *counter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		c.n.Add(1)
		return next(ctx, cmds)
	}
}

// env is one Redis (a database of it) with helpers to open stores on it.
type env struct {
	srv   *redistest.Server
	db    int
	scope string
}

func newEnv(t testing.TB, srv *redistest.Server) *env {
	return &env{srv: srv, db: srv.NewDB(t), scope: uniqueScope()}
}

// open opens a Store on the env's database and scope; tweak may change
// the options (cache size, client).
func (e *env) open(t testing.TB, tweak func(*Options)) *Store {
	t.Helper()
	opts := Options{Addr: e.srv.Addr(), DB: e.db, IDScope: e.scope}
	if tweak != nil {
		tweak(&opts)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := New(ctx, opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// countingClient returns a client on the env's database with a command
// counter. The test closes it.
func (e *env) countingClient(t testing.TB) (*redis.Client, *counter) {
	c := &counter{}
	rdb := redis.NewClient(&redis.Options{Addr: e.srv.Addr(), DB: e.db})
	rdb.AddHook(c)
	t.Cleanup(func() { _ = rdb.Close() })
	return rdb, c
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestConformance(t *testing.T) {
	srv := redistest.Shared(t)
	storetest.Run(t, func(t *testing.T) provisioning.Store {
		return newEnv(t, srv).open(t, nil)
	})
}

func TestConformanceWithoutCache(t *testing.T) {
	srv := redistest.Shared(t)
	storetest.Run(t, func(t *testing.T) provisioning.Store {
		return newEnv(t, srv).open(t, func(o *Options) { o.CacheSize = -1 })
	})
}

func TestNewUnreachable(t *testing.T) {
	srv := redistest.Start(t)
	addr := srv.Addr()
	srv.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := New(ctx, Options{Addr: addr})
	if !errors.Is(err, provisioning.ErrStoreUnavailable) {
		t.Fatalf("New on a stopped server: %v, want ErrStoreUnavailable", err)
	}
}

func TestNewRejectsHashTagInScope(t *testing.T) {
	srv := redistest.Shared(t)
	for _, scope := range []string{"a{b", "a}b"} {
		if _, err := New(ctxT(t), Options{Addr: srv.Addr(), IDScope: scope}); err == nil {
			t.Errorf("scope %q accepted", scope)
		}
	}
}

func TestRoundTrips(t *testing.T) {
	e := newEnv(t, redistest.Shared(t))
	rdb, calls := e.countingClient(t)
	s := e.open(t, func(o *Options) { o.Client = rdb })
	ctx := ctxT(t)
	ca := storetest.NewCACertificate(t, "rt-ca")
	if _, err := s.PutEnrollment(ctx, &provisioning.IndividualEnrollment{RegistrationID: "dev-1"}, ""); err != nil {
		t.Fatal(err)
	}
	g := &provisioning.EnrollmentGroup{EnrollmentGroupID: "grp", Attestation: provisioning.AttestationMechanism{
		Type: provisioning.AttestationX509,
		X509: &provisioning.X509Attestation{SigningCertificates: &provisioning.X509Certificates{
			Primary: &provisioning.X509CertificateWithInfo{Certificate: ca.PEM}}}}}
	if _, err := s.PutEnrollmentGroup(ctx, g, ""); err != nil {
		t.Fatal(err)
	}
	// The invalidation echoes of the writes above must not land between
	// a cold read and its second call; wait until they are through.
	waitQuiet(t, s)

	steps := []struct {
		name string
		call func() error
		want int64
	}{
		{"put enrollment", func() error {
			_, err := s.PutEnrollment(ctx, &provisioning.IndividualEnrollment{RegistrationID: "dev-2"}, "")
			return err
		}, 1},
		{"cold GetEnrollment", func() error { _, err := s.GetEnrollment(ctx, "dev-1"); return err }, 1},
		{"cached GetEnrollment", func() error { _, err := s.GetEnrollment(ctx, "DEV-1"); return err }, 0},
		{"cold GetEnrollment miss", func() error { return wantNotFound(s.GetEnrollment(ctx, "nobody")) }, 1},
		{"cached GetEnrollment miss", func() error { return wantNotFound(s.GetEnrollment(ctx, "nobody")) }, 0},
		{"cold GroupsByCertificate", func() error { return wantGroups(s.GroupsByCertificate(ctx, ca.SHA256)) }, 1},
		{"cached GroupsByCertificate", func() error { return wantGroups(s.GroupsByCertificate(ctx, ca.SHA256)) }, 0},
		{"cold ListEnrollmentGroups", func() error { _, err := s.ListEnrollmentGroups(ctx); return err }, 1},
		{"cached ListEnrollmentGroups", func() error { _, err := s.ListEnrollmentGroups(ctx); return err }, 0},
		{"cold GetEnrollmentGroup", func() error { _, err := s.GetEnrollmentGroup(ctx, "grp"); return err }, 1},
		{"cached GetEnrollmentGroup", func() error { _, err := s.GetEnrollmentGroup(ctx, "grp"); return err }, 0},
		{"TakeChallenge", func() error { return wantNotFound(s.TakeChallenge(ctx, "none")) }, 1},
	}
	for _, st := range steps {
		before := calls.n.Load()
		if err := st.call(); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if got := calls.n.Load() - before; got != st.want {
			t.Errorf("%s: %d Redis round trips, want %d", st.name, got, st.want)
		}
	}
}

func wantNotFound[T any](_ T, err error) error {
	if !errors.Is(err, provisioning.ErrNotFound) {
		return fmt.Errorf("err = %v, want ErrNotFound", err)
	}
	return nil
}

func wantGroups(gs []*provisioning.EnrollmentGroup, err error) error {
	if err != nil {
		return err
	}
	if len(gs) != 1 || gs[0].EnrollmentGroupID != "grp" {
		return fmt.Errorf("got %d groups, want grp", len(gs))
	}
	return nil
}

// waitQuiet writes a marker and waits until this store's own invalidation
// echo of it arrived: every earlier echo has then been handled too (one
// connection delivers messages in order).
func waitQuiet(t testing.TB, s *Store) {
	t.Helper()
	ctx, cancel := context.WithCancel(ctxT(t))
	defer cancel()
	ch := s.WatchChanges(ctx)
	id := fmt.Sprintf("quiet-%d", scopeSeq.Add(1))
	if _, err := s.PutEnrollment(ctx, &provisioning.IndividualEnrollment{RegistrationID: id}, ""); err != nil {
		t.Fatal(err)
	}
	storetest.WaitChange(t, ch, provisioning.Change{Kind: provisioning.ChangeEnrollment, ID: id}, 10*time.Second)
}

// TestTwoBrokersInvalidate: a write on one store drops the other's cached
// entry, and the other then serves the new state.
func TestTwoBrokersInvalidate(t *testing.T) {
	e := newEnv(t, redistest.Shared(t))
	a, b := e.open(t, nil), e.open(t, nil)
	ctx := ctxT(t)
	bChanges := b.WatchChanges(ctx)
	if _, err := a.PutEnrollment(ctx, &provisioning.IndividualEnrollment{RegistrationID: "dev-x"}, ""); err != nil {
		t.Fatal(err)
	}
	storetest.WaitChange(t, bChanges, provisioning.Change{Kind: provisioning.ChangeEnrollment, ID: "dev-x"}, 10*time.Second)
	// b caches "no such enrollment" for dev-y and the enabled dev-x.
	if _, err := b.GetEnrollment(ctx, "dev-y"); !errors.Is(err, provisioning.ErrNotFound) {
		t.Fatal(err)
	}
	waitCached(t, b, "dev-y")
	if got, err := b.GetEnrollment(ctx, "dev-x"); err != nil || !got.Enabled() {
		t.Fatalf("b: %+v, %v", got, err)
	}
	waitCached(t, b, "dev-x")

	start := time.Now()
	disabled := &provisioning.IndividualEnrollment{RegistrationID: "dev-x",
		EnrollmentPolicy: provisioning.EnrollmentPolicy{ProvisioningStatus: provisioning.StatusDisabled}}
	if _, err := a.PutEnrollment(ctx, disabled, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := a.PutEnrollment(ctx, &provisioning.IndividualEnrollment{RegistrationID: "dev-y"}, ""); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"dev-x", "dev-y"} {
		for cached(b, id) {
			if time.Since(start) > time.Second {
				t.Fatalf("b still caches %s 1 s after the write on a", id)
			}
			time.Sleep(50 * time.Microsecond)
		}
	}
	t.Logf("write on a -> both entries dropped from b's cache: %v", time.Since(start))
	if got, err := b.GetEnrollment(ctx, "dev-x"); err != nil || got.Enabled() {
		t.Fatalf("b serves dev-x %+v, %v; want disabled", got, err)
	}
	if _, err := b.GetEnrollment(ctx, "dev-y"); err != nil {
		t.Fatalf("b: dev-y: %v; want the new enrollment", err)
	}
}

// cached reports whether s holds an answer (positive or negative) for id.
func cached(s *Store, id string) bool {
	s.cache.mu.RLock()
	defer s.cache.mu.RUnlock()
	_, ok := s.cache.enr.get(id)
	return ok
}

func waitCached(t testing.TB, s *Store, id string) {
	t.Helper()
	if !cached(s, id) {
		t.Fatalf("%s not cached after a read", id)
	}
}

// TestSubscriptionDropFlushesCache kills the store's pub/sub connection
// (and then restarts Redis): the cache empties at once and stays bypassed,
// so an entry disabled while the subscription was down is never served.
func TestSubscriptionDropFlushesCache(t *testing.T) {
	srv := redistest.Start(t)
	e := &env{srv: srv, scope: uniqueScope()}
	s := e.open(t, nil)
	writer := e.open(t, nil)
	ctx := ctxT(t)
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	changes := s.WatchChanges(wctx)

	put := func(st *Store, status provisioning.ProvisioningStatus) {
		t.Helper()
		en := &provisioning.IndividualEnrollment{RegistrationID: "dev-1", EnrollmentPolicy: provisioning.EnrollmentPolicy{ProvisioningStatus: status}}
		if _, err := st.PutEnrollment(ctx, en, ""); err != nil {
			t.Fatal(err)
		}
	}
	readEnabled := func() bool {
		t.Helper()
		got, err := s.GetEnrollment(ctx, "dev-1")
		if err != nil {
			t.Fatal(err)
		}
		return got.Enabled()
	}

	for _, drop := range []struct {
		name string
		do   func()
	}{
		{"CLIENT KILL", func() {
			if _, err := srv.Do("CLIENT", "KILL", "TYPE", "pubsub"); err != nil {
				t.Fatal(err)
			}
		}},
		{"restart", func() { srv.Restart(t) }},
	} {
		t.Run(drop.name, func(t *testing.T) {
			waitLive(t, s)
			put(writer, provisioning.StatusEnabled)
			// Read only after s saw the write, else the echo arriving during
			// the read (rightly) keeps the answer out of the cache.
			storetest.WaitChange(t, changes, provisioning.Change{Kind: provisioning.ChangeEnrollment, ID: "dev-1"}, 10*time.Second)
			if !readEnabled() {
				t.Fatal("want enabled")
			}
			waitCached(t, s, "dev-1")

			drop.do()
			storetest.WaitChange(t, changes, provisioning.Change{Kind: provisioning.ChangeAll}, 10*time.Second)
			if cached(s, "dev-1") {
				t.Fatal("cache not flushed after the subscription dropped")
			}
			// Disabled while s may not be subscribed: the message may be
			// lost, yet s must never serve the enabled entry again.
			put(writer, provisioning.StatusDisabled)
			for range 20 {
				if readEnabled() {
					t.Fatal("served the enabled entry after it was disabled")
				}
			}
			waitLive(t, s)
			if readEnabled() {
				t.Fatal("served the enabled entry after the subscription came back")
			}
		})
	}
}

// waitLive waits until the store's subscription is confirmed.
func waitLive(t testing.TB, s *Store) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		s.cache.mu.RLock()
		live := s.cache.live
		s.cache.mu.RUnlock()
		if live {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("subscription not restored within 10 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestStaleReadNotCached drives the race "read from Redis, invalidation,
// insert": a read that began before an invalidation must not be cached.
func TestStaleReadNotCached(t *testing.T) {
	if slotOf('e', "dev") == slotOf('e', "other") {
		t.Fatal("test IDs share a stripe; pick others")
	}
	c := newCache(10)
	c.setLive(true)
	steps := []struct {
		name       string
		between    func()
		wantCached bool
	}{
		{"clean read", func() {}, true},
		{"invalidation of another entry", func() { c.invalidate(provisioning.Change{Kind: provisioning.ChangeEnrollment, ID: "other"}) }, true},
		{"invalidation of the entry", func() { c.invalidate(provisioning.Change{Kind: provisioning.ChangeEnrollment, ID: "dev"}) }, false},
		{"subscription drop and restore", func() { c.setLive(false); c.setLive(true) }, false},
		{"unknown message", c.flush, false},
	}
	for _, st := range steps {
		c.flush()
		stamp := c.begin(slotOf('e', "dev"), true)
		st.between()
		c.insert(stamp, func() { c.enr.put("dev", nil) })
		if _, ok := c.enr.get("dev"); ok != st.wantCached {
			t.Errorf("%s: cached = %v, want %v", st.name, ok, st.wantCached)
		}
	}
}

func TestCacheBounded(t *testing.T) {
	e := newEnv(t, redistest.Shared(t))
	s := e.open(t, func(o *Options) { o.CacheSize = 5 })
	ctx := ctxT(t)
	for i := range 20 {
		_, _ = s.GetEnrollment(ctx, fmt.Sprintf("dev-%d", i))
	}
	s.cache.mu.RLock()
	n := s.cache.enr.len()
	s.cache.mu.RUnlock()
	if n > 5 {
		t.Fatalf("cache holds %d enrollments, bound 5", n)
	}
}

// TestConcurrentWritersTwoStores: writers on two processes race with one
// etag; exactly one wins.
func TestConcurrentWritersTwoStores(t *testing.T) {
	e := newEnv(t, redistest.Shared(t))
	stores := []*Store{e.open(t, nil), e.open(t, nil)}
	ctx := ctxT(t)
	for round := range 10 {
		base, err := stores[0].PutEnrollment(ctx, &provisioning.IndividualEnrollment{RegistrationID: "race"}, "")
		if err != nil {
			t.Fatal(err)
		}
		var wins atomic.Int64
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range 16 {
			wg.Go(func() {
				<-start
				_, err := stores[i%2].PutEnrollment(ctx, &provisioning.IndividualEnrollment{RegistrationID: "race", DeviceID: fmt.Sprint(i)}, base.ETag)
				switch {
				case err == nil:
					wins.Add(1)
				case !errors.Is(err, provisioning.ErrPreconditionFailed):
					t.Errorf("writer %d: %v", i, err)
				}
			})
		}
		close(start)
		wg.Wait()
		if wins.Load() != 1 {
			t.Fatalf("round %d: %d writers won, want 1", round, wins.Load())
		}
	}
}
