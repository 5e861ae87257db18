package bolt

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"time"

	"github.com/dpsbroker/dpsbroker/provisioning"
	bolt "go.etcd.io/bbolt"
)

// stamps points at the fields Put assigns in one entry type.
type stamps struct {
	etag             *string
	created, updated **time.Time
}

// set stamps an entry written now with the etag of seq, keeping created
// (now for a new entry).
func (st stamps) set(seq uint64, created, now time.Time) {
	*st.etag = etagFor(seq)
	*st.created, *st.updated = &created, &now
}

// kind describes one entry type to the generic put/get/delete below.
type kind[T any] struct {
	name   string // for error messages
	bucket []byte
	change provisioning.ChangeKind // "" when writes are not watched
	stamps func(*T) stamps
	// index updates secondary indexes in the write transaction; old or cur
	// is nil for a create or a delete. key is the entry's key.
	index func(tx *bolt.Tx, key []byte, old, cur *T) error
	// prepare checks cur before the transaction (nil entries are refused
	// earlier).
	prepare func(cur *T) error
}

// entryKey validates an ID and returns the store key for it.
func entryKey(what, id string) ([]byte, error) {
	switch {
	case id == "":
		return nil, fmt.Errorf("%s: empty ID", what)
	case len(id) > maxKeyLen:
		return nil, fmt.Errorf("%s: ID is %d bytes long, the limit is %d", what, len(id), maxKeyLen)
	}
	return []byte(provisioning.RegistrationKey(id)), nil
}

// etagFor renders a store-wide sequence number as an opaque etag.
func etagFor(seq uint64) string {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], seq)
	return base64.RawURLEncoding.EncodeToString(bytes.TrimLeft(b[:], "\x00"))
}

// checkMatch applies the ifMatch rules of provisioning.Store.
func checkMatch(what, id string, exists bool, etag, ifMatch string) error {
	switch {
	case ifMatch == "":
		return nil
	case !exists:
		return fmt.Errorf("%s %q does not exist (If-Match %q): %w", what, id, ifMatch, provisioning.ErrPreconditionFailed)
	case ifMatch == "*" || ifMatch == etag:
		return nil
	default:
		return fmt.Errorf("%s %q: %w", what, id, provisioning.ErrPreconditionFailed)
	}
}

func decode[T any](raw []byte) (*T, error) {
	v := new(T)
	if err := json.Unmarshal(raw, v); err != nil {
		return nil, fmt.Errorf("decode stored entry: %w", err)
	}
	return v, nil
}

func (k *kind[T]) get(s *Store, ctx context.Context, id string) (*T, error) {
	key, err := entryKey(k.name, id)
	if err != nil {
		return nil, err
	}
	return k.getKey(s, ctx, id, key)
}

// getKey is get with id's store key already made.
func (k *kind[T]) getKey(s *Store, ctx context.Context, id string, key []byte) (*T, error) {
	var v *T
	err := s.view(ctx, func(tx *bolt.Tx) error {
		raw := tx.Bucket(k.bucket).Get(key)
		if raw == nil {
			return fmt.Errorf("%s %q: %w", k.name, id, provisioning.ErrNotFound)
		}
		var err error
		v, err = decode[T](raw)
		return err
	})
	return v, err
}

func (k *kind[T]) put(s *Store, ctx context.Context, id string, in *T, ifMatch string) (*T, error) {
	if in == nil {
		return nil, fmt.Errorf("put %s: nil entry", k.name)
	}
	key, err := entryKey(k.name, id)
	if err != nil {
		return nil, err
	}
	if k.prepare != nil {
		if err := k.prepare(in); err != nil {
			return nil, err
		}
	}
	// A shallow copy suffices: only top-level stamp fields are assigned,
	// and the stored and returned values are JSON, never aliases.
	cur := *in
	var data []byte
	err = s.update(ctx, func(tx *bolt.Tx) error {
		var perr error
		data, perr = k.putTx(s, tx, id, key, &cur, ifMatch, false)
		return perr
	})
	if err != nil {
		return nil, err
	}
	s.changed(k.change, string(key))
	return decode[T](data)
}

// putTx writes cur (stamping it) under key in tx and returns its encoding.
// A failed precondition (ifMatch, or createOnly on an existing entry) is
// detected before anything is written, so a caller may turn it into an
// outcome and still commit the rest of its transaction.
func (k *kind[T]) putTx(s *Store, tx *bolt.Tx, id string, key []byte, cur *T, ifMatch string, createOnly bool) ([]byte, error) {
	b := tx.Bucket(k.bucket)
	var old *T
	oldETag := ""
	if raw := b.Get(key); raw != nil {
		var err error
		if old, err = decode[T](raw); err != nil {
			return nil, err
		}
		oldETag = *k.stamps(old).etag
	}
	if createOnly && old != nil {
		return nil, fmt.Errorf("%s %q already exists: %w", k.name, id, provisioning.ErrPreconditionFailed)
	}
	if err := checkMatch(k.name, id, old != nil, oldETag, ifMatch); err != nil {
		return nil, err
	}
	seq, err := tx.Bucket(bucketMeta).NextSequence()
	if err != nil {
		return nil, err
	}
	now := s.now().UTC()
	created := now
	if old != nil {
		if c := *k.stamps(old).created; c != nil {
			created = *c
		}
	}
	k.stamps(cur).set(seq, created, now)
	data, err := json.Marshal(cur)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", k.name, err)
	}
	if err := b.Put(key, data); err != nil {
		return nil, err
	}
	if k.index != nil {
		if err := k.index(tx, key, old, cur); err != nil {
			return nil, err
		}
	}
	return data, nil
}

func (k *kind[T]) delete(s *Store, ctx context.Context, id, ifMatch string) error {
	key, err := entryKey(k.name, id)
	if err != nil {
		return err
	}
	err = s.update(ctx, func(tx *bolt.Tx) error {
		b := tx.Bucket(k.bucket)
		raw := b.Get(key)
		if raw == nil {
			if ifMatch == "" {
				return fmt.Errorf("%s %q: %w", k.name, id, provisioning.ErrNotFound)
			}
			return checkMatch(k.name, id, false, "", ifMatch)
		}
		old, err := decode[T](raw)
		if err != nil {
			return err
		}
		if err := checkMatch(k.name, id, true, *k.stamps(old).etag, ifMatch); err != nil {
			return err
		}
		if err := b.Delete(key); err != nil {
			return err
		}
		if k.index != nil {
			return k.index(tx, key, old, nil)
		}
		return nil
	})
	if err != nil {
		return err
	}
	s.changed(k.change, string(key))
	return nil
}

// page lists up to limit entries of bucket in key order after cursor. With
// a non-nil prefix it walks the index bucket idx instead, whose keys are
// prefix|entry key, and loads each entry from bucket.
func page[T any](s *Store, ctx context.Context, bucket, idx, prefix []byte, cursor string, limit int) ([]*T, string, error) {
	if limit <= 0 {
		return nil, "", fmt.Errorf("list: limit %d, want a positive page size", limit)
	}
	out := make([]*T, 0, min(limit, 1000))
	next, lastKey := "", ""
	err := s.view(ctx, func(tx *bolt.Tx) error {
		entries := tx.Bucket(bucket)
		scan := entries
		if prefix != nil {
			scan = tx.Bucket(idx)
		}
		c := scan.Cursor()
		start := append(bytes.Clone(prefix), cursor...)
		k, v := c.Seek(start)
		if cursor != "" && bytes.Equal(k, start) {
			k, v = c.Next()
		}
		for ; k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			entryKey := k[len(prefix):]
			if len(out) == limit {
				// One entry beyond the page: there is a next page.
				next = lastKey
				return nil
			}
			if prefix != nil {
				v = entries.Get(entryKey)
				if v == nil {
					return fmt.Errorf("index entry %q without registration", entryKey)
				}
			}
			e, err := decode[T](v)
			if err != nil {
				return err
			}
			out = append(out, e)
			lastKey = string(entryKey)
		}
		return nil
	})
	return out, next, err
}
