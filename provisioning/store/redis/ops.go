package redisstore

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dpsbroker/dpsbroker/provisioning"
)

// PutOperation stores op until op.Expires (Redis expires it). An
// operation whose expiry has already passed is removed instead.
func (s *Store) PutOperation(ctx context.Context, op *provisioning.Operation) error {
	if op == nil {
		return fmt.Errorf("redis store: put operation: nil operation")
	}
	if op.OperationID == "" {
		return fmt.Errorf("redis store: put operation: empty ID")
	}
	if op.Expires.IsZero() {
		return fmt.Errorf("redis store: put operation %q: no expiry", op.OperationID)
	}
	if err := ctxErr(ctx, "put operation"); err != nil {
		return err
	}
	key := s.k.op(op.OperationID)
	ttl := op.Expires.Sub(s.now())
	if ttl < time.Millisecond {
		if err := s.rdb.Del(ctx, key).Err(); err != nil {
			return s.wrap("put operation", err)
		}
		return nil
	}
	raw, err := json.Marshal(op)
	if err != nil {
		return fmt.Errorf("redis store: encode operation %q: %w", op.OperationID, err)
	}
	if err := s.rdb.Set(ctx, key, raw, ttl).Err(); err != nil {
		return s.wrap("put operation", err)
	}
	return nil
}

// GetOperation returns the operation, or ErrNotFound once it expired.
func (s *Store) GetOperation(ctx context.Context, operationID string) (*provisioning.Operation, error) {
	if operationID == "" {
		return nil, fmt.Errorf("redis store: get operation: empty ID")
	}
	raw, err := s.rdb.Get(ctx, s.k.op(operationID)).Bytes()
	if isNil(err) {
		return nil, notFound("operation", operationID)
	}
	if err != nil {
		return nil, s.wrap("get operation", err)
	}
	var op provisioning.Operation
	if err := json.Unmarshal(raw, &op); err != nil {
		return nil, fmt.Errorf("redis store: operation %q: %w", operationID, err)
	}
	return &op, nil
}

// PutChallenge stores a single-use value for ttl.
func (s *Store) PutChallenge(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	if key == "" {
		return fmt.Errorf("redis store: put challenge: empty key")
	}
	if ttl <= 0 {
		return fmt.Errorf("redis store: put challenge: TTL %v must be positive", ttl)
	}
	// SET PX has millisecond resolution; never round a short TTL to "no
	// expiry" or to an error.
	ttl = max(ttl, time.Millisecond)
	if err := s.rdb.Set(ctx, s.k.chal(key), value, ttl).Err(); err != nil {
		return s.wrap("put challenge", err)
	}
	return nil
}

// TakeChallenge returns the value and deletes it in one GETDEL, so that a
// challenge answers at most once across every broker.
func (s *Store) TakeChallenge(ctx context.Context, key string) ([]byte, error) {
	if key == "" {
		return nil, fmt.Errorf("redis store: take challenge: empty key")
	}
	v, err := s.rdb.GetDel(ctx, s.k.chal(key)).Bytes()
	if isNil(err) {
		return nil, fmt.Errorf("redis store: challenge: %w", provisioning.ErrNotFound)
	}
	if err != nil {
		return nil, s.wrap("take challenge", err)
	}
	return v, nil
}

// AppendEvent adds ev to the event stream (trimmed to about MaxEvents) and
// returns its stream ID. ev.Node defaults to the store's NodeID.
func (s *Store) AppendEvent(ctx context.Context, ev *provisioning.Event) (string, error) {
	if ev == nil {
		return "", fmt.Errorf("redis store: append event: nil event")
	}
	c := *ev
	c.ID = ""
	if c.Node == "" {
		c.Node = s.node
	}
	raw, err := json.Marshal(&c)
	if err != nil {
		return "", fmt.Errorf("redis store: encode event: %w", err)
	}
	id, err := s.rdb.XAdd(ctx, &redis.XAddArgs{
		Stream: s.k.events(),
		MaxLen: s.maxEvents,
		Approx: true,
		Values: []string{"e", string(raw)},
	}).Result()
	if err != nil {
		return "", s.wrap("append event", err)
	}
	return id, nil
}

var streamID = regexp.MustCompile(`^[0-9]{1,20}-[0-9]{1,20}$`)

// ReadEvents returns up to limit events after afterID ("" for the oldest
// kept), oldest first. afterID must be a stream ID this log issued.
func (s *Store) ReadEvents(ctx context.Context, afterID string, limit int) ([]*provisioning.Event, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("redis store: read events: limit %d must be positive", limit)
	}
	start := "-"
	if afterID != "" {
		if !streamID.MatchString(afterID) {
			return nil, fmt.Errorf("redis store: read events: %q is not an event ID", afterID)
		}
		start = "(" + afterID
	}
	msgs, err := s.rdb.XRangeN(ctx, s.k.events(), start, "+", int64(min(limit, MaxPage))).Result()
	if err != nil {
		return nil, s.wrap("read events", err)
	}
	out := make([]*provisioning.Event, 0, len(msgs))
	for _, m := range msgs {
		raw, _ := m.Values["e"].(string)
		var ev provisioning.Event
		if err := json.Unmarshal([]byte(raw), &ev); err != nil {
			return nil, fmt.Errorf("redis store: event %s: %w", m.ID, err)
		}
		ev.ID = m.ID
		out = append(out, &ev)
	}
	return out, nil
}
