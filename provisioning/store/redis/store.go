// Package redisstore is the shared provisioning.Store on Redis: any number
// of broker processes serve one fleet from it.
//
// Layout. Every key of one ID scope starts with "dps:{<scope>}:", so all of
// them hash to one Redis Cluster slot and multi-key Lua scripts stay legal
// on a cluster:
//
//	enr:<id> grp:<id> ca:<name> reg:<id>   hashes v (JSON), e (etag), c, u (times), x (indexes)
//	ix:enr ix:grp ix:ca ix:reg             sorted sets of IDs (lexicographic listing)
//	ix:reggrp:<group>                      registrations admitted by a group
//	ix:cert:<sha256 hex>                   groups signing with that certificate
//	ix:grpca:<name>                        groups referencing a CA entry by name
//	ix:cacert:<sha256 hex>                 CA entries holding that certificate
//	grpgen                                 counter bumped by every group or CA write
//	op:<id> chal:<key>                     operations and challenges, with TTL
//	events                                 the event log, a Redis Stream
//	changes                                pub/sub channel of invalidations
//
// IDs in keys are lower-cased (provisioning.RegistrationKey); stored values
// keep the spelling they were written with.
//
// Writes of enrollments, groups, CA certificates and registrations are one
// Lua script each (one round trip): etag check, value, indexes and the
// invalidation message happen atomically, so of N writers holding the same
// etag exactly one wins, on any number of processes.
//
// Cache. Each Store caches enrollments (including misses: every device of a
// group first asks for an individual enrollment that does not exist),
// groups, the group list, GroupsByCertificate answers and CA certificates.
// A cache hit makes no Redis call; a miss on GetEnrollment makes one.
// Invalidations travel on the "changes" channel; while the subscription is
// down the cache is empty and bypassed (see cache).
package redisstore

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dpsbroker/dpsbroker/provisioning"
)

// Defaults for zero Options fields.
const (
	DefaultIDScope   = "default"
	DefaultCacheSize = 10000
	DefaultMaxEvents = 100000
	// MaxPage is the largest page ListEnrollments and ListRegistrations
	// return; larger limits are clamped to it.
	MaxPage = 1000
	// subscribeTimeout bounds New's wait for the first subscription
	// confirmation when ctx has no deadline.
	subscribeTimeout = 10 * time.Second
)

// Options configure New. The zero value connects to localhost:6379.
type Options struct {
	// Addr, Username, Password, DB and TLSConfig build the client when
	// Client is nil.
	Addr      string
	Username  string
	Password  string
	DB        int
	TLSConfig *tls.Config
	// IDScope namespaces every key (several DPS instances may share one
	// Redis). It must not contain '{' or '}'. Default DefaultIDScope.
	IDScope string
	// Client, when set, is used instead of a client built from the fields
	// above (to share a pool or use a cluster client). Close does not close
	// it.
	Client redis.UniversalClient
	// CacheSize bounds each part of the in-process cache (entries).
	// 0 means DefaultCacheSize; negative disables the per-entry caches
	// (every Get goes to Redis) but keeps the ListEnrollmentGroups
	// snapshot, which is part of that method's contract.
	CacheSize int
	// MaxEvents is the approximate length the event stream is trimmed to.
	// 0 means DefaultMaxEvents.
	MaxEvents int64
	// Logger receives subscription drops and reconnects. Default
	// slog.Default().
	Logger *slog.Logger
	// Now is the clock for timestamps and TTLs. Default time.Now.
	Now func() time.Time
	// NodeID is written into events that carry no Node.
	NodeID string
}

// Store is the Redis provisioning.Store. It is safe for concurrent use.
type Store struct {
	rdb       redis.UniversalClient
	ownClient bool
	k         keys
	cache     *cache
	log       *slog.Logger
	now       func() time.Time
	node      string
	maxEvents int64

	loopCtx   context.Context
	stopLoop  context.CancelFunc
	loopDone  chan struct{}
	psMu      sync.Mutex
	ps        *redis.PubSub
	watchMu   sync.Mutex
	watchers  map[*watcher]struct{}
	closeOnce sync.Once
}

var _ provisioning.Store = (*Store)(nil)

// New connects, loads the scripts and subscribes to invalidations. It
// returns only once the subscription is confirmed, so that every change
// made after New returns reaches this Store's cache and watchers. An
// unreachable Redis is an error wrapping provisioning.ErrStoreUnavailable.
func New(ctx context.Context, opts Options) (*Store, error) {
	scope := opts.IDScope
	if scope == "" {
		scope = DefaultIDScope
	}
	if strings.ContainsAny(scope, "{}") {
		return nil, fmt.Errorf("redis store: ID scope %q must not contain '{' or '}' (it is the cluster hash tag)", scope)
	}
	size := opts.CacheSize
	if size == 0 {
		size = DefaultCacheSize
	}
	s := &Store{
		rdb:       opts.Client,
		k:         keys{p: "dps:{" + scope + "}:"},
		cache:     newCache(size),
		log:       opts.Logger,
		now:       opts.Now,
		node:      opts.NodeID,
		maxEvents: opts.MaxEvents,
		watchers:  make(map[*watcher]struct{}),
		loopDone:  make(chan struct{}),
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	s.log = s.log.With("component", "redisstore", "scope", scope)
	if s.now == nil {
		s.now = time.Now
	}
	if s.maxEvents <= 0 {
		s.maxEvents = DefaultMaxEvents
	}
	if s.rdb == nil {
		addr := opts.Addr
		if addr == "" {
			addr = "localhost:6379"
		}
		s.rdb = redis.NewClient(&redis.Options{
			Addr:      addr,
			Username:  opts.Username,
			Password:  opts.Password,
			DB:        opts.DB,
			TLSConfig: opts.TLSConfig,
		})
		s.ownClient = true
	}
	fail := func(err error) (*Store, error) {
		if s.ownClient {
			_ = s.rdb.Close()
		}
		return nil, err
	}
	if err := s.rdb.Ping(ctx).Err(); err != nil {
		return fail(s.wrap("ping", err))
	}
	// Loading up front makes the first EVALSHA of each script succeed, so a
	// write is one round trip from the start. After a Redis restart the
	// scripts are gone; go-redis then falls back to EVAL by itself.
	for _, sc := range allScripts {
		if err := sc.Load(ctx, s.rdb).Err(); err != nil {
			return fail(s.wrap("load scripts", err))
		}
	}

	s.loopCtx, s.stopLoop = context.WithCancel(context.Background())
	ready := make(chan struct{})
	go s.subscribeLoop(ready)
	wait, cancel := ctx, context.CancelFunc(func() {})
	if _, ok := ctx.Deadline(); !ok {
		wait, cancel = context.WithTimeout(ctx, subscribeTimeout)
	}
	defer cancel()
	select {
	case <-ready:
		return s, nil
	case <-wait.Done():
		s.stop()
		return fail(fmt.Errorf("redis store: subscribe to %s: %w: %w", s.k.changes(), provisioning.ErrStoreUnavailable, wait.Err()))
	}
}

// Close stops the subscription, closes every WatchChanges channel and
// closes the client if New created it.
func (s *Store) Close() error {
	var err error
	s.closeOnce.Do(func() {
		s.stop()
		if s.ownClient {
			err = s.rdb.Close()
		}
	})
	return err
}

// stop ends the subscription loop. Closing the PubSub is what unblocks a
// pending receive.
func (s *Store) stop() {
	s.stopLoop()
	s.psMu.Lock()
	if s.ps != nil {
		_ = s.ps.Close()
	}
	s.psMu.Unlock()
	<-s.loopDone
}

// keys builds the key names of one scope. Every name starts with the
// prefix holding the hash tag.
type keys struct{ p string }

func (k keys) op(id string) string    { return k.p + "op:" + id }
func (k keys) chal(key string) string { return k.p + "chal:" + key }
func (k keys) events() string         { return k.p + "events" }
func (k keys) changes() string        { return k.p + "changes" }
func (k keys) ids(kind string) string { return k.p + "ix:" + kind }
func (k keys) certIdx(hex string) string {
	return k.p + "ix:cert:" + hex
}

// wrap turns a Redis failure into a store error. Cancellation stays a
// context error (the caller gave up); anything else means the store could
// not answer, and the decision must fail closed on it.
func (s *Store) wrap(op string, err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("redis store: %s: %w", op, err)
	}
	return fmt.Errorf("redis store: %s: %w: %w", op, provisioning.ErrStoreUnavailable, err)
}

func notFound(what, id string) error {
	return fmt.Errorf("redis store: %s %q: %w", what, id, provisioning.ErrNotFound)
}

func preconditionFailed(what, id string) error {
	return fmt.Errorf("redis store: %s %q: %w", what, id, provisioning.ErrPreconditionFailed)
}

// newETag returns a random etag. Random rather than a version counter so
// that an etag of a deleted entry can never match its re-creation.
func newETag() string {
	var b [12]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on Linux.
	return base64.RawURLEncoding.EncodeToString(b[:])
}
