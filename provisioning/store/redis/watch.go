package redisstore

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dpsbroker/dpsbroker/provisioning"
)

const (
	// pingEvery is how long the subscription may be silent before it is
	// pinged; a ping unanswered for another pingEvery counts as a drop (a
	// half-open TCP connection never reports an error by itself).
	pingEvery = 5 * time.Second
	// watchBuffer is how many changes a slow watcher may fall behind
	// before its queue collapses into one ChangeAll.
	watchBuffer = 1024
	maxBackoff  = time.Second
)

// subscribeLoop owns the invalidation subscription for the Store's
// lifetime. It closes ready at the first confirmation. Every drop flushes
// and disables the cache and tells watchers ChangeAll; every confirmation
// (re-)enables the cache.
func (s *Store) subscribeLoop(ready chan struct{}) {
	defer close(s.loopDone)
	defer s.closeWatchers()
	ctx := s.loopCtx
	backoff := 50 * time.Millisecond
	first := true
	for ctx.Err() == nil {
		ps := s.rdb.Subscribe(ctx, s.k.changes())
		if !s.setPubSub(ps) {
			_ = ps.Close()
			return
		}
		confirmed, err := s.receive(ctx, ps, func() {
			s.cache.setLive(true)
			backoff = 50 * time.Millisecond
			if first {
				first = false
				close(ready)
				return
			}
			s.log.Info("invalidation subscription restored; cache re-enabled")
			// Changes made while the subscription was down were missed.
			s.broadcast(provisioning.Change{Kind: provisioning.ChangeAll})
		})
		_ = ps.Close()
		s.cache.setLive(false)
		if ctx.Err() != nil {
			return
		}
		if confirmed {
			s.log.Warn("invalidation subscription lost; cache flushed and bypassed", "err", err)
			s.broadcast(provisioning.Change{Kind: provisioning.ChangeAll})
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// setPubSub publishes the current subscription so that Close can close
// it: a blocked receive does not watch its context. It reports false once
// the Store is closing.
func (s *Store) setPubSub(ps *redis.PubSub) bool {
	s.psMu.Lock()
	defer s.psMu.Unlock()
	if s.loopCtx.Err() != nil {
		return false
	}
	s.ps = ps
	return true
}

// receive reads the subscription until it fails. onConfirm runs when Redis
// confirms the subscription; confirmed reports whether it did.
func (s *Store) receive(ctx context.Context, ps *redis.PubSub, onConfirm func()) (confirmed bool, err error) {
	pingPending := false
	for {
		msg, err := ps.ReceiveTimeout(ctx, pingEvery)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() && confirmed && !pingPending && ctx.Err() == nil {
				if err := ps.Ping(ctx); err != nil {
					return confirmed, err
				}
				pingPending = true
				continue
			}
			return confirmed, err
		}
		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Kind == "subscribe" && !confirmed {
				confirmed = true
				onConfirm()
			}
		case *redis.Message:
			s.handle(m.Payload)
		case *redis.Pong:
			pingPending = false
		}
		if _, ok := msg.(*redis.Pong); !ok {
			pingPending = false // any traffic proves the connection alive
		}
	}
}

// handle applies one invalidation message "<kind>:<etag>:<id>".
func (s *Store) handle(payload string) {
	k, rest, ok1 := strings.Cut(payload, ":")
	etag, id, ok2 := strings.Cut(rest, ":")
	ch := provisioning.Change{Kind: provisioning.ChangeKind(k), ID: id}
	switch ch.Kind {
	case provisioning.ChangeEnrollment, provisioning.ChangeGroup, provisioning.ChangeCA:
	default:
		ok1 = false
	}
	if !ok1 || !ok2 {
		// Unknown message (a newer writer?): be safe, drop everything.
		ch = provisioning.Change{Kind: provisioning.ChangeAll}
		s.cache.flush()
	} else {
		s.cache.echo(ch, etag)
	}
	s.broadcast(ch)
}

// watcher is one WatchChanges consumer. The subscription reader never
// blocks on it: changes queue up to watchBuffer, then collapse into one
// ChangeAll.
type watcher struct {
	mu     sync.Mutex
	queue  []provisioning.Change
	notify chan struct{} // capacity 1
	out    chan provisioning.Change
}

func (w *watcher) push(c provisioning.Change) {
	w.mu.Lock()
	if len(w.queue) >= watchBuffer {
		w.queue = append(w.queue[:0], provisioning.Change{Kind: provisioning.ChangeAll})
	} else {
		w.queue = append(w.queue, c)
	}
	w.mu.Unlock()
	select {
	case w.notify <- struct{}{}:
	default:
	}
}

// WatchChanges delivers every invalidation (from this or any other
// process) until ctx ends or the Store is closed, then closes the
// channel. The subscription is live before New returns, so any change made
// after this call is delivered.
func (s *Store) WatchChanges(ctx context.Context) <-chan provisioning.Change {
	w := &watcher{notify: make(chan struct{}, 1), out: make(chan provisioning.Change)}
	s.watchMu.Lock()
	if s.watchers == nil { // closed
		s.watchMu.Unlock()
		close(w.out)
		return w.out
	}
	s.watchers[w] = struct{}{}
	s.watchMu.Unlock()

	go func() {
		defer close(w.out)
		defer func() {
			s.watchMu.Lock()
			delete(s.watchers, w)
			s.watchMu.Unlock()
		}()
		for {
			select {
			case <-ctx.Done():
				return
			case <-s.loopCtx.Done():
				return
			case <-w.notify:
			}
			w.mu.Lock()
			batch := w.queue
			w.queue = nil
			w.mu.Unlock()
			for _, c := range batch {
				select {
				case w.out <- c:
				case <-ctx.Done():
					return
				case <-s.loopCtx.Done():
					return
				}
			}
		}
	}()
	return w.out
}

func (s *Store) broadcast(c provisioning.Change) {
	s.watchMu.Lock()
	defer s.watchMu.Unlock()
	for w := range s.watchers {
		w.push(c)
	}
}

// closeWatchers stops accepting watchers; their goroutines end on loopCtx.
func (s *Store) closeWatchers() {
	s.watchMu.Lock()
	s.watchers = nil
	s.watchMu.Unlock()
}
