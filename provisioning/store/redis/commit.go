package redisstore

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"time"

	"github.com/dpsbroker/dpsbroker/provisioning"
)

// CommitRegistration implements provisioning.RegistrationCommitter in one
// Redis round trip (commitScript): the etag-checked record with its group
// index, the operation with its TTL and the event.
func (s *Store) CommitRegistration(ctx context.Context, c *provisioning.RegistrationCommit) (*provisioning.RegistrationState, string, error) {
	if err := c.Check(); err != nil {
		return nil, "", fmt.Errorf("redis store: %w", err)
	}
	key, err := checkID("commit registration", c.Record.RegistrationID)
	if err != nil {
		return nil, "", err
	}
	if err := ctxErr(ctx, "commit registration"); err != nil {
		return nil, "", err
	}
	var idx []string
	if g := c.Record.EnrollmentGroupID; g != "" {
		idx = []string{"z:ix:reggrp:" + provisioning.RegistrationKey(g)}
	} else {
		idx = []string{}
	}
	index, err := json.Marshal(idx)
	if err != nil {
		return nil, "", err
	}
	rec := *c.Record
	rec.ETag, rec.CreatedDateTimeUTC, rec.LastUpdatedDateTimeUTC = "", nil, nil
	value, err := json.Marshal(&rec)
	if err != nil {
		return nil, "", fmt.Errorf("redis store: encode registration %q: %w", key, err)
	}

	now := s.now().UTC()
	m := meta{etag: newETag(), updated: now}
	opHead, opTail, err := splitOperation(c.Operation, &rec, m)
	if err != nil {
		return nil, "", fmt.Errorf("redis store: encode operation %q: %w", c.Operation.OperationID, err)
	}
	ttl := c.Operation.Expires.Sub(now)
	ttlMS := "0"
	if ttl >= time.Millisecond {
		ttlMS = fmt.Sprint(ttl.Milliseconds())
	}
	ev := *c.Event
	ev.ID = ""
	if ev.Node == "" {
		ev.Node = s.node
	}
	event, err := json.Marshal(&ev)
	if err != nil {
		return nil, "", fmt.Errorf("redis store: encode event: %w", err)
	}
	createOnly := "0"
	if c.CreateOnly {
		createOnly = "1"
	}

	res, err := commitScript.Run(ctx, s.rdb,
		[]string{s.entryKey(kindRegistration, key), s.k.ids(kindRegistration.prefix), s.k.op(c.Operation.OperationID), s.k.events()},
		c.IfMatch, createOnly, key, m.etag, formatTime(now), value, s.k.p, index, opHead, opTail, ttlMS, event, s.maxEvents,
	).Slice()
	if err != nil {
		return nil, "", s.wrap("commit registration", err)
	}
	if status, _ := res[0].(int64); status == 0 {
		return nil, "", preconditionFailed(kindRegistration.what, key)
	}
	if len(res) != 3 {
		return nil, "", fmt.Errorf("redis store: commit registration: unexpected script answer %v", res)
	}
	if m.created, err = parseTime(res[1]); err != nil {
		return nil, "", fmt.Errorf("redis store: registration %q: %w", key, err)
	}
	id, _ := res[2].(string)
	applyRegistration(&rec, m)
	return &rec, id, nil
}

// splitOperation encodes op with rec (stamped with m) as its result, cut
// around the record's creation time: a write keeps the stored creation
// time, which only the commit script reads. The cut is found by encoding a
// random placeholder time and looking for it; user data (certificate
// names, payloads) cannot predict it.
func splitOperation(op *provisioning.Operation, rec *provisioning.RegistrationState, m meta) (head, tail string, err error) {
	res := *rec
	res.ETag = m.etag
	updated := m.updated
	res.LastUpdatedDateTimeUTC = &updated
	cp := *op
	cp.Result = &res
	for range 3 {
		var b [4]byte
		_, _ = rand.Read(b[:])
		// Year 1 with random nanoseconds: never a real creation time.
		placeholder := time.Date(1, 1, 1, 0, 0, 0, 1+int(binary.BigEndian.Uint32(b[:])%999_999_998), time.UTC)
		res.CreatedDateTimeUTC = &placeholder
		raw, err := json.Marshal(&cp)
		if err != nil {
			return "", "", err
		}
		quoted, err := json.Marshal(placeholder)
		if err != nil {
			return "", "", err
		}
		if bytes.Count(raw, quoted) != 1 {
			continue
		}
		i := bytes.Index(raw, quoted)
		return string(raw[:i+1]), string(raw[i+len(quoted)-1:]), nil
	}
	return "", "", fmt.Errorf("operation JSON holds the creation-time placeholder")
}
