package bolt

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/dpsbroker/dpsbroker/provisioning"
	bolt "go.etcd.io/bbolt"
)

// Kinds of expiring entries in the expiry index.
const (
	expOperation byte = 'o'
	expChallenge byte = 'c'
)

// expiryKey orders expiring entries by time so that the sweeper reads only
// what is due.
func expiryKey(at time.Time, kind byte, key []byte) []byte {
	b := make([]byte, 9, 9+len(key))
	binary.BigEndian.PutUint64(b, uint64(max(at.UnixNano(), 0)))
	b[8] = kind
	return append(b, key...)
}

// PutOperation implements provisioning.OperationStore. Expires is required.
func (s *Store) PutOperation(ctx context.Context, op *provisioning.Operation) error {
	switch {
	case op == nil:
		return fmt.Errorf("put operation: nil operation")
	case op.OperationID == "" || len(op.OperationID) > maxKeyLen:
		return fmt.Errorf("put operation: invalid operation ID (length %d)", len(op.OperationID))
	case op.Expires.IsZero():
		return fmt.Errorf("put operation %q: no expiry", op.OperationID)
	}
	data, err := json.Marshal(op)
	if err != nil {
		return fmt.Errorf("encode operation: %w", err)
	}
	return s.update(ctx, func(tx *bolt.Tx) error {
		return putOperationTx(tx, op.OperationID, op.Expires, data)
	})
}

// appendFill is the fill percent of buckets whose keys grow with time
// (operation IDs begin with their creation time, expiry keys with the
// expiry, event keys are a sequence). New keys land in the rightmost page;
// bbolt's default (0.5) splits it in halves, which leaves every page of
// such a bucket half empty and the tree deeper, with more pages to write
// per commit. Keys that arrive out of order still fit, by splitting.
const appendFill = 0.9

// appendBucket is tx's bucket name, filled for appends (appendFill). The
// setting lasts for the transaction only.
func appendBucket(tx *bolt.Tx, name []byte) *bolt.Bucket {
	b := tx.Bucket(name)
	b.FillPercent = appendFill
	return b
}

// putOperationTx stores an encoded operation and files it in the expiry
// index, replacing an operation with the same ID.
func putOperationTx(tx *bolt.Tx, id string, expires time.Time, data []byte) error {
	key := []byte(id)
	b, exp := appendBucket(tx, bucketOperations), appendBucket(tx, bucketExpiry)
	if raw := b.Get(key); raw != nil {
		old, err := decode[provisioning.Operation](raw)
		if err != nil {
			return err
		}
		if err := exp.Delete(expiryKey(old.Expires, expOperation, key)); err != nil {
			return err
		}
	}
	if err := b.Put(key, data); err != nil {
		return err
	}
	return exp.Put(expiryKey(expires, expOperation, key), nil)
}

// GetOperation implements provisioning.OperationStore. An expired operation
// is missing even before the sweeper deletes it.
func (s *Store) GetOperation(ctx context.Context, operationID string) (*provisioning.Operation, error) {
	if operationID == "" {
		return nil, fmt.Errorf("get operation: empty ID")
	}
	var op *provisioning.Operation
	// The overlay first: an entry leaves it only once bbolt has it, so a
	// read transaction begun after a miss there sees it.
	var err error
	if raw := s.overlay.operation(operationID); raw != nil && ctx.Err() == nil {
		op, err = decode[provisioning.Operation](raw)
	} else {
		err = s.view(ctx, func(tx *bolt.Tx) error {
			raw := tx.Bucket(bucketOperations).Get([]byte(operationID))
			if raw == nil {
				return fmt.Errorf("operation %q: %w", operationID, provisioning.ErrNotFound)
			}
			var err error
			op, err = decode[provisioning.Operation](raw)
			return err
		})
	}
	if err != nil {
		return nil, err
	}
	if !s.now().Before(op.Expires) {
		return nil, fmt.Errorf("operation %q expired: %w", operationID, provisioning.ErrNotFound)
	}
	return op, nil
}

// PutChallenge implements provisioning.ChallengeStore.
func (s *Store) PutChallenge(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	switch {
	case key == "" || len(key) > maxKeyLen:
		return fmt.Errorf("put challenge: invalid key (length %d)", len(key))
	case ttl <= 0:
		return fmt.Errorf("put challenge: ttl %v, want > 0", ttl)
	}
	expires := s.now().Add(ttl)
	rec := make([]byte, 8, 8+len(value))
	binary.BigEndian.PutUint64(rec, uint64(expires.UnixNano()))
	rec = append(rec, value...)
	k := []byte(key)
	return s.update(ctx, func(tx *bolt.Tx) error {
		b, exp := tx.Bucket(bucketChallenges), appendBucket(tx, bucketExpiry)
		if old := b.Get(k); len(old) >= 8 {
			if err := exp.Delete(expiryKey(challengeExpiry(old), expChallenge, k)); err != nil {
				return err
			}
		}
		if err := b.Put(k, rec); err != nil {
			return err
		}
		return exp.Put(expiryKey(expires, expChallenge, k), nil)
	})
}

func challengeExpiry(rec []byte) time.Time {
	return time.Unix(0, int64(binary.BigEndian.Uint64(rec[:8])))
}

// TakeChallenge implements provisioning.ChallengeStore: read and delete in
// one write transaction, so concurrent takers are serialised and exactly
// one of them gets the value.
func (s *Store) TakeChallenge(ctx context.Context, key string) ([]byte, error) {
	if key == "" {
		return nil, fmt.Errorf("take challenge: empty key")
	}
	k := []byte(key)
	var value []byte
	err := s.update(ctx, func(tx *bolt.Tx) error {
		value = nil // the function may run more than once
		b := tx.Bucket(bucketChallenges)
		rec := b.Get(k)
		if len(rec) < 8 {
			return fmt.Errorf("challenge: %w", provisioning.ErrNotFound)
		}
		expires := challengeExpiry(rec)
		if s.now().Before(expires) {
			value = bytes.Clone(rec[8:])
		}
		if err := b.Delete(k); err != nil {
			return err
		}
		return tx.Bucket(bucketExpiry).Delete(expiryKey(expires, expChallenge, k))
	})
	if err != nil {
		return nil, err
	}
	if value == nil {
		return nil, fmt.Errorf("challenge expired: %w", provisioning.ErrNotFound)
	}
	return value, nil
}

// sweepLoop deletes expired operations and challenges until ctx ends.
// Reads already treat them as missing; the sweep only reclaims space.
func (s *Store) sweepLoop(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			for {
				n, err := s.sweep(ctx)
				if err != nil {
					s.log.Warn("bolt store: sweeping expired entries failed", "err", err)
					break
				}
				if n < sweepBatch {
					break
				}
			}
		}
	}
}

// sweep deletes up to sweepBatch expired entries and says how many.
func (s *Store) sweep(ctx context.Context) (int, error) {
	now := expiryKey(s.now(), 0, nil)[:8]
	n := 0
	err := s.update(ctx, func(tx *bolt.Tx) error {
		exp := tx.Bucket(bucketExpiry)
		// Collect first: deleting under a bbolt cursor while iterating
		// skips entries.
		var due [][]byte
		c := exp.Cursor()
		for k, _ := c.First(); k != nil && len(due) < sweepBatch && bytes.Compare(k[:8], now) <= 0; k, _ = c.Next() {
			due = append(due, bytes.Clone(k))
		}
		for _, k := range due {
			target := bucketOperations
			if k[8] == expChallenge {
				target = bucketChallenges
			}
			if err := tx.Bucket(target).Delete(k[9:]); err != nil {
				return err
			}
			if err := exp.Delete(k); err != nil {
				return err
			}
		}
		n = len(due)
		return nil
	})
	return n, err
}

// AppendEvent implements provisioning.EventLog. IDs are decimal sequence
// numbers; the log keeps the newest MaxEvents events.
func (s *Store) AppendEvent(ctx context.Context, ev *provisioning.Event) (string, error) {
	if ev == nil {
		return "", fmt.Errorf("append event: nil event")
	}
	cp := *ev
	var id string
	err := s.update(ctx, func(tx *bolt.Tx) error {
		var err error
		id, err = s.appendEventTx(tx, &cp)
		return err
	})
	if err != nil {
		return "", err
	}
	return id, nil
}

// appendEventTx appends ev (the caller's copy: its ID is set) and trims
// the log.
func (s *Store) appendEventTx(tx *bolt.Tx, ev *provisioning.Event) (string, error) {
	b := appendBucket(tx, bucketEvents)
	seq, err := b.NextSequence()
	if err != nil {
		return "", err
	}
	ev.ID = strconv.FormatUint(seq, 10)
	data, err := json.Marshal(ev)
	if err != nil {
		return "", fmt.Errorf("encode event: %w", err)
	}
	if err := b.Put(seqKey(seq), data); err != nil {
		return "", err
	}
	return ev.ID, trimEvents(b, seq, s.maxEvents)
}

// trimEvents deletes the oldest events beyond maxEvents. Keys are dense
// (only the head is ever deleted), so the count is last - first + 1.
func trimEvents(b *bolt.Bucket, last, maxEvents uint64) error {
	c := b.Cursor()
	k, _ := c.First()
	if k == nil {
		return nil
	}
	first := binary.BigEndian.Uint64(k)
	for ; last-first+1 > maxEvents && k != nil; k, _ = c.First() {
		if err := c.Delete(); err != nil {
			return err
		}
		first++
	}
	return nil
}

func seqKey(seq uint64) []byte {
	var k [8]byte
	binary.BigEndian.PutUint64(k[:], seq)
	return k[:]
}

// ReadEvents implements provisioning.EventLog.
func (s *Store) ReadEvents(ctx context.Context, afterID string, limit int) ([]*provisioning.Event, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("read events: limit %d, want > 0", limit)
	}
	var start uint64
	if afterID != "" {
		n, err := strconv.ParseUint(afterID, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("read events: %q is not an event ID of this store", afterID)
		}
		start = n + 1
	}
	if err := s.flushJournal(ctx); err != nil {
		return nil, err
	}
	var out []*provisioning.Event
	err := s.view(ctx, func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketEvents).Cursor()
		for k, v := c.Seek(seqKey(start)); k != nil && len(out) < limit; k, v = c.Next() {
			ev, err := decode[provisioning.Event](v)
			if err != nil {
				return err
			}
			out = append(out, ev)
		}
		return nil
	})
	return out, err
}
