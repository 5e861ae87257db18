package bolt

import (
	"context"
	"log/slog"
	"sync"

	"github.com/dpsbroker/dpsbroker/provisioning"
)

// watchers fans local changes out to WatchChanges subscribers. A writer
// only appends to a bounded per-subscriber queue under a short lock and
// never waits for a reader; a subscriber whose queue is full has it
// replaced by a single ChangeAll, so it loses detail but never silently
// loses a change.
type watchers struct {
	base   context.Context // ends when the store closes
	buffer int
	log    *slog.Logger

	mu   sync.Mutex
	subs map[*subscriber]struct{}
	wg   sync.WaitGroup
}

type subscriber struct {
	mu      sync.Mutex
	queue   []provisioning.Change
	lostAll bool          // queue holds a ChangeAll that covers what was dropped
	wake    chan struct{} // capacity 1: "the queue has something"
}

func (w *watchers) init(base context.Context, buffer int, log *slog.Logger) {
	w.base, w.buffer, w.log = base, buffer, log
	w.subs = map[*subscriber]struct{}{}
}

// wait returns when every subscriber goroutine has closed its channel.
func (w *watchers) wait() { w.wg.Wait() }

// WatchChanges implements provisioning.ChangeWatcher for changes made
// through this Store (bbolt allows one process per file, so there are no
// others). The channel closes when ctx ends or the store is closed.
func (s *Store) WatchChanges(ctx context.Context) <-chan provisioning.Change {
	w := &s.watch
	out := make(chan provisioning.Change)
	sub := &subscriber{wake: make(chan struct{}, 1)}
	w.mu.Lock()
	closed := w.base.Err() != nil
	if !closed {
		w.subs[sub] = struct{}{}
		w.wg.Add(1)
	}
	w.mu.Unlock()
	if closed {
		close(out)
		return out
	}
	go func() {
		defer w.wg.Done()
		defer close(out)
		defer func() {
			w.mu.Lock()
			delete(w.subs, sub)
			w.mu.Unlock()
		}()
		for {
			select {
			case <-ctx.Done():
				return
			case <-w.base.Done():
				return
			case <-sub.wake:
			}
			sub.mu.Lock()
			batch := sub.queue
			sub.queue, sub.lostAll = nil, false
			sub.mu.Unlock()
			for _, c := range batch {
				select {
				case out <- c:
				case <-ctx.Done():
					return
				case <-w.base.Done():
					return
				}
			}
		}
	}()
	return out
}

// changed publishes a committed write; kind "" (registrations) is not
// watched.
func (s *Store) changed(kind provisioning.ChangeKind, key string) {
	if kind == "" {
		return
	}
	w := &s.watch
	c := provisioning.Change{Kind: kind, ID: key}
	w.mu.Lock()
	defer w.mu.Unlock()
	for sub := range w.subs {
		sub.mu.Lock()
		switch {
		case sub.lostAll:
			// The pending ChangeAll already covers this change.
		case len(sub.queue) >= w.buffer:
			sub.queue = append(sub.queue[:0], provisioning.Change{Kind: provisioning.ChangeAll})
			sub.lostAll = true
			w.log.Warn("bolt store: change watcher fell behind; sending ChangeAll", "pending", w.buffer)
		default:
			sub.queue = append(sub.queue, c)
		}
		sub.mu.Unlock()
		select {
		case sub.wake <- struct{}{}:
		default:
		}
	}
}
