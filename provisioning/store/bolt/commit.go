package bolt

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/dpsbroker/dpsbroker/provisioning"
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
	var (
		recData  []byte
		eventID  string
		mismatch error
	)
	err = s.update(ctx, func(tx *bolt.Tx) error {
		recData, eventID, mismatch = nil, "", nil // the function may run more than once
		rec := *c.Record
		data, err := registrations.putTx(s, tx, id, key, &rec, c.IfMatch, c.CreateOnly)
		if errors.Is(err, provisioning.ErrPreconditionFailed) {
			mismatch = err
			return nil
		}
		if err != nil {
			return err
		}
		op := *c.Operation
		op.Result = &rec
		opData, err := json.Marshal(&op)
		if err != nil {
			return fmt.Errorf("encode operation: %w", err)
		}
		if err := putOperationTx(tx, op.OperationID, op.Expires, opData); err != nil {
			return err
		}
		ev := *c.Event
		if eventID, err = s.appendEventTx(tx, &ev); err != nil {
			return err
		}
		recData = data
		return nil
	})
	switch {
	case err != nil:
		return nil, "", err
	case mismatch != nil:
		return nil, "", mismatch
	}
	stored, err := decode[provisioning.RegistrationState](recData)
	if err != nil {
		return nil, "", err
	}
	return stored, eventID, nil
}
