package provisioning

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// The interfaces below are declared here, by their consumer, and implemented
// under provisioning/store/. The domain never imports a concrete store.
//
// Conventions every implementation follows (provisioning/store/storetest
// checks them):
//   - Get of a missing entry returns an error wrapping ErrNotFound.
//   - Put with ifMatch == "" creates or replaces unconditionally. Put with a
//     non-empty ifMatch replaces only if the stored etag equals it, and
//     returns ErrPreconditionFailed otherwise (also when the entry is
//     missing). "*" matches any existing entry.
//   - Put assigns a fresh ETag and the timestamps (CreatedDateTimeUTC is kept
//     from the stored entry) and returns the stored value.
//   - Delete follows the same ifMatch rules; deleting a missing entry with
//     ifMatch == "" returns ErrNotFound.
//   - Returned values are the caller's to keep but must not be modified when
//     a store documents them as shared (ListEnrollmentGroups).

// EnrollmentStore keeps individual enrollments.
type EnrollmentStore interface {
	GetEnrollment(ctx context.Context, registrationID string) (*IndividualEnrollment, error)
	PutEnrollment(ctx context.Context, e *IndividualEnrollment, ifMatch string) (*IndividualEnrollment, error)
	DeleteEnrollment(ctx context.Context, registrationID, ifMatch string) error
	// ListEnrollments pages through enrollments in registration ID order,
	// starting after cursor ("" for the start). next is "" on the last page.
	ListEnrollments(ctx context.Context, cursor string, limit int) (page []*IndividualEnrollment, next string, err error)
}

// GroupStore keeps enrollment groups.
type GroupStore interface {
	GetEnrollmentGroup(ctx context.Context, groupID string) (*EnrollmentGroup, error)
	PutEnrollmentGroup(ctx context.Context, g *EnrollmentGroup, ifMatch string) (*EnrollmentGroup, error)
	DeleteEnrollmentGroup(ctx context.Context, groupID, ifMatch string) error
	// ListEnrollmentGroups returns every group, ordered by ID. The slice is
	// a snapshot shared between callers: a store returns the same slice
	// until a group changes, so consumers may key derived indexes on it.
	ListEnrollmentGroups(ctx context.Context) ([]*EnrollmentGroup, error)
	// GroupsByCertificate returns the groups that reference the certificate
	// with this SHA-256 thumbprint (through signingCertificates or a CA
	// reference), ordered by group ID.
	GroupsByCertificate(ctx context.Context, sha256 [32]byte) ([]*EnrollmentGroup, error)
}

// CAStore keeps uploaded CA certificates that groups reference by name.
type CAStore interface {
	GetCACertificate(ctx context.Context, name string) (*CACertificate, error)
	PutCACertificate(ctx context.Context, c *CACertificate, ifMatch string) (*CACertificate, error)
	DeleteCACertificate(ctx context.Context, name, ifMatch string) error
	ListCACertificates(ctx context.Context) ([]*CACertificate, error)
}

// RegistrationStore keeps one registration record per registration ID.
type RegistrationStore interface {
	GetRegistration(ctx context.Context, registrationID string) (*RegistrationState, error)
	PutRegistration(ctx context.Context, r *RegistrationState, ifMatch string) (*RegistrationState, error)
	DeleteRegistration(ctx context.Context, registrationID, ifMatch string) error
	// ListRegistrations pages like ListEnrollments; groupID != "" keeps only
	// the records admitted by that group.
	ListRegistrations(ctx context.Context, groupID, cursor string, limit int) (page []*RegistrationState, next string, err error)
}

// OperationStore keeps registration operations until they expire.
type OperationStore interface {
	// PutOperation stores op until op.Expires; a later Put replaces it.
	PutOperation(ctx context.Context, op *Operation) error
	// GetOperation returns ErrNotFound once the operation has expired.
	GetOperation(ctx context.Context, operationID string) (*Operation, error)
}

// EventLog is the durable, append-only log of provisioning events.
type EventLog interface {
	// AppendEvent stores ev and returns the ID it was given.
	AppendEvent(ctx context.Context, ev *Event) (id string, err error)
	// ReadEvents returns up to limit events with IDs after afterID ("" for
	// the oldest kept), oldest first.
	ReadEvents(ctx context.Context, afterID string, limit int) ([]*Event, error)
}

// RegistrationCommit is everything one register request writes: the
// registration record, the operation the device polls and the event that
// reports the result.
type RegistrationCommit struct {
	// Record is stored as PutRegistration stores it: the store assigns the
	// etag and the timestamps.
	Record *RegistrationState
	// IfMatch follows the rules of PutRegistration.
	IfMatch string
	// CreateOnly requires that no record exists yet (ErrPreconditionFailed
	// otherwise), so that of two first registrations racing on one device
	// exactly one wins. IfMatch must then be empty.
	CreateOnly bool
	// Operation is stored as PutOperation stores it, except that its Result
	// is the stored record (whatever Operation.Result holds is ignored).
	Operation *Operation
	// Event is appended as AppendEvent appends it.
	Event *Event
}

// Check reports what makes c unusable; stores call it before writing so
// that both refuse the same commits.
func (c *RegistrationCommit) Check() error {
	switch {
	case c == nil:
		return errors.New("registration commit: nil commit")
	case c.Record == nil:
		return errors.New("registration commit: nil record")
	case c.Record.RegistrationID == "":
		return errors.New("registration commit: record without a registration ID")
	case c.Operation == nil:
		return errors.New("registration commit: nil operation")
	case c.Operation.OperationID == "":
		return errors.New("registration commit: operation without an ID")
	case c.Operation.Expires.IsZero():
		return fmt.Errorf("registration commit: operation %q has no expiry", c.Operation.OperationID)
	case c.Event == nil:
		return errors.New("registration commit: nil event")
	case c.CreateOnly && c.IfMatch != "":
		return fmt.Errorf("registration commit: CreateOnly with If-Match %q", c.IfMatch)
	}
	return nil
}

// RegistrationCommitter writes a registration in one atomic step: one
// transaction, one fsync on the embedded store, one round trip on Redis.
type RegistrationCommitter interface {
	// CommitRegistration stores c.Record, c.Operation and c.Event together
	// or not at all. When the precondition (IfMatch, CreateOnly) fails it
	// returns an error wrapping ErrPreconditionFailed and writes nothing.
	// It returns the stored record and the event's ID, and does not modify
	// c or what it points to.
	CommitRegistration(ctx context.Context, c *RegistrationCommit) (stored *RegistrationState, eventID string, err error)
}

// ChallengeStore keeps single-use secrets (TPM nonce challenges) with a
// lifetime.
type ChallengeStore interface {
	PutChallenge(ctx context.Context, key string, value []byte, ttl time.Duration) error
	// TakeChallenge returns the value and deletes it atomically, so that a
	// challenge answers at most once, across brokers. Missing or expired:
	// ErrNotFound.
	TakeChallenge(ctx context.Context, key string) ([]byte, error)
}

// Store is everything the provisioning service keeps. Both the Redis store
// and the embedded store implement it.
type Store interface {
	EnrollmentStore
	GroupStore
	CAStore
	RegistrationStore
	OperationStore
	EventLog
	ChallengeStore
	ChangeWatcher
	RegistrationCommitter
	// Close releases the store's connections and files.
	Close() error
}

// ChangeKind names what kind of entry a Change is about.
type ChangeKind string

// Change kinds. ChangeAll means "anything may have changed": consumers drop
// every cached entry (sent when a store loses its change feed).
const (
	ChangeEnrollment ChangeKind = "enrollment"
	ChangeGroup      ChangeKind = "group"
	ChangeCA         ChangeKind = "ca"
	ChangeAll        ChangeKind = "all"
)

// Change says that an entry was written or deleted, by this process or by
// another one sharing the store.
type Change struct {
	Kind ChangeKind
	// ID is the registration ID, group ID or CA name (lower-cased the way
	// the store keys it); empty for ChangeAll.
	ID string
}

// ChangeWatcher delivers changes so that brokers can drop caches and
// disconnect live sessions of an entry that was disabled.
type ChangeWatcher interface {
	// WatchChanges delivers changes until ctx ends, then closes the channel.
	// A slow consumer may miss changes; the store then sends ChangeAll.
	WatchChanges(ctx context.Context) <-chan Change
}
