package bolt

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/dpsbroker/dpsbroker/provisioning"
	"github.com/dpsbroker/dpsbroker/provisioning/wire"
	bolt "go.etcd.io/bbolt"
)

// CommitRegistration implements provisioning.RegistrationCommitter: the
// record, the operation and the event are written in one transaction,
// which concurrent registrations share (one fsync for all of them).
//
// A failed precondition is an outcome of this write only: the function
// writes nothing and reports success to the transaction, so that the
// registrations batched with it still commit.
func (s *Store) CommitRegistration(ctx context.Context, c *provisioning.RegistrationCommit) (*provisioning.RegistrationState, string, error) {
	if err := c.Check(); err != nil {
		return nil, "", err
	}
	id := c.Record.RegistrationID
	key, err := entryKey(registrations.name, id)
	if err != nil {
		return nil, "", err
	}
	if n := len(c.Operation.OperationID); n > maxKeyLen {
		return nil, "", fmt.Errorf("registration commit: operation ID is %d bytes long, the limit is %d", n, maxKeyLen)
	}
	if s.writer.jw != nil {
		out, eventID, direct, err := s.commitJournaled(ctx, c, key)
		if !direct {
			return out, eventID, err
		}
	}
	var (
		stored   *provisioning.RegistrationState
		recData  []byte
		eventID  string
		mismatch error
	)
	err = s.update(ctx, func(tx *bolt.Tx) error {
		stored, recData, eventID, mismatch = nil, nil, "", nil // the function may run more than once
		rec := *c.Record
		data, err := registrations.putTx(s, tx, id, key, &rec, c.IfMatch, c.CreateOnly)
		if errors.Is(err, provisioning.ErrPreconditionFailed) {
			mismatch = err
			return nil
		}
		if err != nil {
			return err
		}
		// The operation's result is the record just encoded: splice its
		// bytes in rather than encode it a second time.
		opData, err := encodeOperation(c.Operation, data)
		if err != nil {
			return err
		}
		if err := putOperationTx(tx, c.Operation.OperationID, c.Operation.Expires, opData); err != nil {
			return err
		}
		ev := *c.Event
		if eventID, err = s.appendEventTx(tx, &ev); err != nil {
			return err
		}
		stored, recData = &rec, data
		return nil
	})
	switch {
	case err != nil:
		return nil, "", err
	case mismatch != nil:
		return nil, "", mismatch
	}
	out, err := returnedRecord(stored, recData)
	if err != nil {
		return nil, "", err
	}
	return out, eventID, nil
}

// commitJournaled commits c through the registration journal (journal.go).
// direct says c is too large for the journal and must be committed
// straight into bbolt instead.
func (s *Store) commitJournaled(ctx context.Context, c *provisioning.RegistrationCommit, key []byte) (out *provisioning.RegistrationState, eventID string, direct bool, err error) {
	if err := ctx.Err(); err != nil {
		return nil, "", false, err
	}
	rc := &regCall{c: c, key: key}
	if handed, err := s.writer.call(ctx, &batchCall{reg: rc}); err != nil {
		if !handed && err == ctx.Err() {
			return nil, "", false, err
		}
		if errors.Is(err, errClosed) {
			err = unavailable(err)
		}
		return nil, "", false, err
	}
	switch {
	case rc.mismatch != nil:
		return nil, "", false, rc.mismatch
	case rc.tooLarge:
		return nil, "", true, nil
	}
	out, err = returnedRecord(rc.rec, rc.entry.record)
	if err != nil {
		return nil, "", false, err
	}
	return out, strconv.FormatUint(rc.entry.eventSeq, 10), false, nil
}

// operationHead is provisioning.Operation without its result, which
// encodeOperation appends already encoded (TestEncodeOperation keeps the
// two in step).
type operationHead struct {
	OperationID    string                          `json:"operationId"`
	RegistrationID string                          `json:"registrationId"`
	Status         provisioning.RegistrationStatus `json:"status"`
	Created        time.Time                       `json:"created"`
	Expires        time.Time                       `json:"expires"`
}

// encodeOperation encodes op with result, the JSON of its Result, as its
// result (op.Result is ignored). It writes result's bytes as they are:
// encoding them as a json.RawMessage would scan and copy them once more.
func encodeOperation(op *provisioning.Operation, result []byte) ([]byte, error) {
	head, err := json.Marshal(&operationHead{
		OperationID: op.OperationID, RegistrationID: op.RegistrationID, Status: op.Status,
		Created: op.Created, Expires: op.Expires,
	})
	if err != nil {
		return nil, fmt.Errorf("encode operation: %w", err)
	}
	const key = `,"result":`
	out := make([]byte, 0, len(head)+len(key)+len(result))
	out = append(out, head[:len(head)-1]...) // without the closing brace
	out = append(out, key...)
	out = append(out, result...)
	return append(out, '}'), nil
}

// returnedRecord is the record CommitRegistration returns: rec, which was
// encoded as data and stored, rather than a decode of data (20-30 µs per
// registration). It gets its own copies of what it shares with the
// caller's argument (the stamps are fresh already), without monotonic
// clock readings, so that it equals what a read returns. Where the
// encoding is not the value (encoding/json compacts and escapes a payload;
// a time outside UTC decodes in a zone of its offset), it decodes data.
func returnedRecord(rec *provisioning.RegistrationState, data []byte) (*provisioning.RegistrationState, error) {
	if len(rec.Payload) > 0 || !inUTC(rec.CertificateInfo) || !inUTC(rec.SigningCertInfo) {
		return decode[provisioning.RegistrationState](data)
	}
	out := *rec
	for _, ci := range []**wire.X509CertificateInfo{&out.CertificateInfo, &out.SigningCertInfo} {
		if *ci != nil {
			c := **ci
			c.NotBeforeUTC, c.NotAfterUTC = c.NotBeforeUTC.UTC(), c.NotAfterUTC.UTC()
			*ci = &c
		}
	}
	return &out, nil
}

func inUTC(ci *wire.X509CertificateInfo) bool {
	return ci == nil || (ci.NotBeforeUTC.Location() == time.UTC && ci.NotAfterUTC.Location() == time.UTC)
}
