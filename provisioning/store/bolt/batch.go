package bolt

import (
	"context"
	"errors"
	"slices"

	bolt "go.etcd.io/bbolt"
)

// errClosed answers writes that arrive after Close.
var errClosed = errors.New("store is closed")

// maxBatch bounds how many writes share one transaction, so that one
// commit never grows without limit under a burst.
const maxBatch = 256

// batcher is a group commit: every write transaction of the store goes
// through one goroutine, which runs all the writes queued while the
// previous commit was syncing in a single bbolt transaction, so they share
// one fsync. Unlike bolt.DB.Batch it never waits for company: a lone write
// commits at once, and coalescing happens exactly when writers would
// otherwise queue behind each other's fsync.
//
// A write function may run more than once (when another function of its
// batch fails, the transaction rolls back and the rest run again), so it
// must set its outputs afresh on every run and touch nothing outside the
// transaction. A function that fails is run again alone, so that its error
// never depends on writes of others that were rolled back.
type batcher struct {
	db      *bolt.DB
	reqs    chan *batchCall
	stopped <-chan struct{} // closed when the store closes

	// jw sends registration commits through the journal (journal.go);
	// nil commits them straight into bbolt.
	jw *journalWriter
}

// batchCall is one request to the writer: a write function, a
// registration commit for the journal (reg), or a flush of the journal
// into bbolt (flush).
type batchCall struct {
	fn    func(*bolt.Tx) error
	reg   *regCall
	flush bool
	done  chan error
}

// do runs fn in a write transaction shared with concurrent writes and
// returns once that transaction committed or failed. handed is false when
// fn never ran: ctx ended or the store closed while waiting for the
// writer.
func (b *batcher) do(ctx context.Context, fn func(*bolt.Tx) error) (handed bool, err error) {
	return b.call(ctx, &batchCall{fn: fn})
}

// call hands c to the writer and waits for its outcome (see do).
func (b *batcher) call(ctx context.Context, c *batchCall) (handed bool, err error) {
	c.done = make(chan error, 1)
	select {
	case b.reqs <- c:
	case <-ctx.Done():
		return false, ctx.Err()
	case <-b.stopped:
		return false, errClosed
	}
	// Once taken, the write may commit: wait for its outcome whatever the
	// caller's context does.
	return true, <-c.done
}

// loop serves writes until the store closes.
func (b *batcher) loop() {
	if b.jw != nil {
		defer b.jw.finish()
	}
	for {
		var first *batchCall
		select {
		case <-b.stopped:
			return
		case first = <-b.reqs:
		case <-b.jw.due():
			b.jw.applyLogged()
			continue
		}
		calls := []*batchCall{first}
	drain:
		for len(calls) < maxBatch {
			select {
			case c := <-b.reqs:
				calls = append(calls, c)
			default:
				break drain
			}
		}
		if b.jw == nil {
			b.run(calls)
			continue
		}
		var regs, others []*batchCall
		for _, c := range calls {
			if c.reg != nil {
				regs = append(regs, c)
			} else {
				others = append(others, c)
			}
		}
		if len(others) > 0 {
			b.runAfterJournal(others)
		}
		if len(regs) > 0 {
			b.jw.commit(regs)
		}
	}
}

// runAfterJournal runs calls other than journal commits: bbolt first
// receives everything the journal holds, so that no write or listing ever
// sees bbolt behind what was acknowledged.
func (b *batcher) runAfterJournal(calls []*batchCall) {
	err := b.jw.apply()
	var txs []*batchCall
	for _, c := range calls {
		switch {
		case c.flush || err != nil:
			c.done <- err
		default:
			txs = append(txs, c)
		}
	}
	if len(txs) > 0 {
		b.run(txs)
		// They may have taken sequence numbers (etags, events).
		b.jw.seqKnown = false
	}
}

func (b *batcher) run(calls []*batchCall) {
	for len(calls) > 0 {
		failed := -1
		err := b.db.Update(func(tx *bolt.Tx) error {
			for i, c := range calls {
				if err := c.fn(tx); err != nil {
					failed = i
					return err
				}
			}
			return nil
		})
		if failed < 0 {
			for _, c := range calls {
				c.done <- err
			}
			return
		}
		c := calls[failed]
		calls = slices.Delete(calls, failed, failed+1)
		if len(calls) == 0 && failed == 0 {
			// It ran alone already.
			c.done <- err
			continue
		}
		c.done <- b.db.Update(c.fn)
	}
}
