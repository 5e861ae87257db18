package provisioning

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"time"

	"github.com/dpsbroker/dpsbroker/provisioning/wire"
)

// DefaultOperationTTL is how long a registration operation can be polled.
// SDKs poll every 1 to 5 s and give up after a few minutes; ten minutes
// outlasts every client while keeping the store small.
const DefaultOperationTTL = 10 * time.Minute

// maxPutAttempts bounds the etag retry loop of Register. Every round lets
// at least one of the racing requests for a device commit, so N requests
// settle within N rounds; a device keeps one request in flight, and a few
// more only when it retries on other brokers. More means something is
// wrong.
const maxPutAttempts = 16

// Admission is what an attestation step decided about a device that may
// provision: who it is and which entry admitted it.
type Admission struct {
	// RegistrationID is the device's registration ID as it presented it.
	RegistrationID string
	// DeviceID is the IoT hub device ID; empty means RegistrationID.
	DeviceID        string
	AttestationType AttestationType
	// Enrollment is set when an individual enrollment admitted the device,
	// Group when an enrollment group did; the policy of that entry drives
	// allocation. With neither, every linked hub is a candidate.
	Enrollment *IndividualEnrollment
	Group      *EnrollmentGroup
	// CertificateInfo describes an X.509 device's certificate and
	// SigningCertificateInfo the group certificate that admitted it.
	CertificateInfo        *wire.X509CertificateInfo
	SigningCertificateInfo *wire.X509CertificateInfo
	// AuthenticationKey is the base64 key blob a TPM device imports for its
	// hub (registrationState.tpm.authenticationKey); empty otherwise.
	AuthenticationKey string
	// Explanation is the attestation's one-line account, kept in the event.
	Explanation string
}

// policy returns the enrollment policy that governs allocation.
func (a *Admission) policy() *EnrollmentPolicy {
	switch {
	case a.Enrollment != nil:
		return &a.Enrollment.EnrollmentPolicy
	case a.Group != nil:
		return &a.Group.EnrollmentPolicy
	default:
		return nil
	}
}

func (a *Admission) groupID() string {
	if a.Group != nil {
		return a.Group.EnrollmentGroupID
	}
	return ""
}

func (a *Admission) deviceID() string {
	if a.DeviceID != "" {
		return a.DeviceID
	}
	if a.Enrollment != nil && a.Enrollment.DeviceID != "" {
		return a.Enrollment.DeviceID
	}
	return a.RegistrationID
}

// ServiceOptions configure a Service.
type ServiceOptions struct {
	// Registrations, Operations and Events keep what Register writes.
	// When they are one store that implements RegistrationCommitter (as
	// every provisioning.Store does), Register writes the record, the
	// operation and the event through it in one atomic step; otherwise it
	// makes three writes.
	Registrations RegistrationStore
	Operations    OperationStore
	Events        EventLog
	Allocator     *Allocator
	// OperationTTL is how long a device can poll an operation
	// (DefaultOperationTTL when zero).
	OperationTTL time.Duration
	// Now is the clock (time.Now when nil).
	Now func() time.Time
	// Node names this broker in events, so operators can tell which
	// process decided.
	Node   string
	Logger *slog.Logger
	// Publish, when set, fans every event out live (to MQTT service
	// subscribers) after it was appended to the event log. It must not
	// block: it runs on the device's request path.
	Publish func(*Event)
}

// Service registers admitted devices: it allocates a hub, keeps the
// registration record and the operation a device polls, and records every
// result and refusal as an event. It holds no MQTT or store specifics and
// is safe for concurrent use.
type Service struct {
	regs    RegistrationStore
	ops     OperationStore
	events  EventLog
	commit  func(context.Context, *RegistrationCommit) (*RegistrationState, string, error)
	alloc   *Allocator
	ttl     time.Duration
	now     func() time.Time
	node    string
	log     *slog.Logger
	publish func(*Event)
}

// NewService checks the options and returns a Service.
func NewService(opts ServiceOptions) (*Service, error) {
	var missing []string
	if opts.Registrations == nil {
		missing = append(missing, "Registrations")
	}
	if opts.Operations == nil {
		missing = append(missing, "Operations")
	}
	if opts.Events == nil {
		missing = append(missing, "Events")
	}
	if opts.Allocator == nil {
		missing = append(missing, "Allocator")
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("provisioning: NewService: missing %s", strings.Join(missing, ", "))
	}
	if opts.OperationTTL < 0 {
		return nil, fmt.Errorf("provisioning: NewService: negative OperationTTL %v", opts.OperationTTL)
	}
	s := &Service{
		regs:    opts.Registrations,
		ops:     opts.Operations,
		events:  opts.Events,
		alloc:   opts.Allocator,
		ttl:     opts.OperationTTL,
		now:     opts.Now,
		node:    opts.Node,
		log:     opts.Logger,
		publish: opts.Publish,
	}
	s.commit = s.commitSeparately
	if c, ok := opts.Registrations.(RegistrationCommitter); ok &&
		sameStore(opts.Registrations, opts.Operations) && sameStore(opts.Registrations, opts.Events) {
		s.commit = c.CommitRegistration
	}
	if s.ttl == 0 {
		s.ttl = DefaultOperationTTL
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	return s, nil
}

// sameStore reports whether a and b are the same store value. Comparing
// interfaces panics on uncomparable dynamic types, which a store may have.
func sameStore(a, b any) bool {
	ta := reflect.TypeOf(a)
	return ta == reflect.TypeOf(b) && ta.Comparable() && a == b
}

// Register provisions an admitted device. It allocates the hub under the
// admitting entry's policy (the hub of the existing record counts as the
// current one when the device re-provisions), and writes the registration
// record, an operation holding the final result, and an "assigned" event,
// or a "failed" event with the allocation's DPS error code, in one store
// commit. An allocation failure is a result, not an error: the operation
// then has status failed. The error is for infrastructure faults only.
//
// When another broker wrote the same record in between (etag mismatch),
// the commit writes nothing and Register starts over from the new record.
//
// Registering again is idempotent: the device keeps its hub while the hub
// list and the policy are unchanged.
//
// payload is the device's custom data; it only matters to custom
// (webhook) allocation, which the Allocator refuses, so it is not stored.
func (s *Service) Register(ctx context.Context, adm *Admission, payload json.RawMessage) (*Operation, error) {
	_ = payload
	if adm == nil || adm.RegistrationID == "" {
		return nil, errors.New("provisioning: Register: admission without a registration ID")
	}
	opID, err := NewOperationID()
	if err != nil {
		return nil, err
	}
	for attempt := 1; ; attempt++ {
		prev, err := s.regs.GetRegistration(ctx, adm.RegistrationID)
		switch {
		case errors.Is(err, ErrNotFound):
			prev = nil
		case err != nil:
			return nil, fmt.Errorf("provisioning: read registration of %q: %w", adm.RegistrationID, err)
		}
		rec, allocErr, err := s.allocate(adm, prev)
		if err != nil {
			return nil, err
		}
		now := s.now()
		op := &Operation{
			OperationID:    opID,
			RegistrationID: adm.RegistrationID,
			Status:         rec.Status,
			Created:        now,
			Expires:        now.Add(s.ttl),
		}
		ev := &Event{
			Type:              EventAssigned,
			Time:              now.UTC(),
			RegistrationID:    adm.RegistrationID,
			DeviceID:          rec.DeviceID,
			AttestationType:   adm.AttestationType,
			EnrollmentGroupID: adm.groupID(),
			AssignedHub:       rec.AssignedHub,
			OperationID:       opID,
			Explanation:       adm.Explanation,
			Node:              s.node,
		}
		if allocErr != nil {
			ev.Type = EventFailed
			ev.ErrorCode = allocErr.Code
			ev.Reason = allocErr.Msg
		}
		c := &RegistrationCommit{Record: rec, Operation: op, Event: ev}
		if prev != nil {
			c.IfMatch = prev.ETag
		} else {
			c.CreateOnly = true
		}
		stored, evID, err := s.commit(ctx, c)
		switch {
		case err == nil:
			op.Result = stored
			ev.ID = evID
			s.announce(ctx, ev)
			return op, nil
		case errors.Is(err, ErrPreconditionFailed) && attempt < maxPutAttempts:
			continue
		default:
			return nil, fmt.Errorf("provisioning: write registration of %q: %w", adm.RegistrationID, err)
		}
	}
}

// commitSeparately is the commit for stores that cannot commit in one
// step: three writes, not atomic. CreateOnly degrades to an unconditional
// write (PutRegistration has no create-only mode), and a failed event
// append is logged, not returned, as Refused does.
func (s *Service) commitSeparately(ctx context.Context, c *RegistrationCommit) (*RegistrationState, string, error) {
	stored, err := s.regs.PutRegistration(ctx, c.Record, c.IfMatch)
	if err != nil {
		return nil, "", err
	}
	op := *c.Operation
	op.Result = stored
	if err := s.ops.PutOperation(ctx, &op); err != nil {
		return nil, "", fmt.Errorf("store operation: %w", err)
	}
	id, err := s.events.AppendEvent(ctx, c.Event)
	if err != nil {
		s.log.Error("event log append failed; the event is only published live",
			"type", c.Event.Type, "registrationId", c.Event.RegistrationID, "error", err)
	}
	return stored, id, nil
}

// allocate builds the new registration record from the previous one (nil
// for a first registration). An *AllocationError yields a failed record.
func (s *Service) allocate(adm *Admission, prev *RegistrationState) (*RegistrationState, *AllocationError, error) {
	current := ""
	if prev != nil && prev.Status == RegistrationAssigned {
		current = prev.AssignedHub
	}
	rec := &RegistrationState{
		RegistrationID:    adm.RegistrationID,
		DeviceID:          adm.deviceID(),
		AttestationType:   adm.AttestationType,
		EnrollmentGroupID: adm.groupID(),
		CertificateInfo:   adm.CertificateInfo,
		SigningCertInfo:   adm.SigningCertificateInfo,
	}
	hub, err := s.alloc.Allocate(adm.RegistrationID, adm.policy(), current)
	if err != nil {
		var ae *AllocationError
		if !errors.As(err, &ae) {
			return nil, nil, fmt.Errorf("provisioning: allocate %q: %w", adm.RegistrationID, err)
		}
		rec.Status = RegistrationFailed
		rec.ErrorCode = ae.Code
		rec.ErrorMessage = ae.Msg
		return rec, ae, nil
	}
	rec.Status = RegistrationAssigned
	rec.AssignedHub = hub
	rec.Substatus = substatus(adm.policy(), prev, current, hub)
	return rec, nil, nil
}

// substatus follows DPS: a first assignment is initialAssignment; staying
// on the same hub keeps what the record said; moving to another hub
// migrates or resets the device data as the reprovision policy says.
func substatus(p *EnrollmentPolicy, prev *RegistrationState, current, hub string) string {
	switch {
	case current == "":
		return SubstatusInitialAssignment
	case strings.EqualFold(current, hub):
		if prev.Substatus != "" {
			return prev.Substatus
		}
		return SubstatusInitialAssignment
	}
	var rp *ReprovisionPolicy
	if p != nil {
		rp = p.ReprovisionPolicy
	}
	if rp == nil || rp.MigrateDeviceData == nil || *rp.MigrateDeviceData {
		return SubstatusDeviceDataMigrated
	}
	return SubstatusDeviceDataReset
}

// Operation returns the operation a device polls. It answers ErrNotFound
// when the operation is missing, expired, or belongs to another
// registration ID: a device must never read another device's result, nor
// learn that an operation ID exists.
func (s *Service) Operation(ctx context.Context, registrationID, operationID string) (*Operation, error) {
	op, err := s.ops.GetOperation(ctx, operationID)
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			return nil, fmt.Errorf("operation: %w", ErrNotFound)
		}
		return nil, fmt.Errorf("provisioning: read operation: %w", err)
	}
	if !strings.EqualFold(op.RegistrationID, registrationID) || !s.now().Before(op.Expires) {
		return nil, fmt.Errorf("operation: %w", ErrNotFound)
	}
	return op, nil
}

// Refused records a refusal: it logs it, appends it to the event log and
// publishes it. Type defaults to EventRefused; Time and Node are filled in
// when empty. A failure to append is logged, not returned: the device is
// refused either way.
func (s *Service) Refused(ctx context.Context, ev *Event) {
	if ev.Type == "" {
		ev.Type = EventRefused
	}
	s.record(ctx, ev)
}

// record stamps, logs, appends and publishes one event.
func (s *Service) record(ctx context.Context, ev *Event) {
	if ev.Time.IsZero() {
		ev.Time = s.now().UTC()
	}
	if ev.Node == "" {
		ev.Node = s.node
	}
	id, err := s.events.AppendEvent(ctx, ev)
	if err != nil {
		s.log.Error("event log append failed; the event is only published live",
			"type", ev.Type, "registrationId", ev.RegistrationID, "error", err)
	} else {
		ev.ID = id
	}
	s.announce(ctx, ev)
}

// announce logs and publishes an event that is already in the log.
func (s *Service) announce(ctx context.Context, ev *Event) {
	attrs := []any{
		"type", ev.Type, "registrationId", ev.RegistrationID,
		"attestation", ev.AttestationType,
	}
	if ev.EnrollmentGroupID != "" {
		attrs = append(attrs, "enrollmentGroupId", ev.EnrollmentGroupID)
	}
	if ev.AssignedHub != "" {
		attrs = append(attrs, "hub", ev.AssignedHub)
	}
	if ev.ErrorCode != 0 {
		attrs = append(attrs, "errorCode", ev.ErrorCode, "reason", ev.Reason)
	}
	if ev.Explanation != "" {
		attrs = append(attrs, "explanation", ev.Explanation)
	}
	s.log.Log(ctx, levelOf(ev.Type), "provisioning "+string(ev.Type), attrs...)
	if s.publish != nil {
		s.publish(ev)
	}
}

func levelOf(t EventType) slog.Level {
	if t == EventAssigned {
		return slog.LevelInfo
	}
	return slog.LevelWarn
}

// operationIDVersion starts every operation ID, as Azure's IDs start with a
// small number ("4.d0a6..."); it lets a later format be told apart.
const operationIDVersion = "5."

// NewOperationID returns an unguessable operation ID in the opaque DPS
// shape: "5.<16 hex>.<uuid-like>". The 16 hex digits are the creation
// time (big-endian Unix nanoseconds), so that IDs sort by creation and a
// store keyed by them appends instead of inserting at random (a bbolt
// commit then rewrites the rightmost pages only, shared by the writes of
// one group commit). The time is no secret: the device knows when it
// registered. Unguessability rests on the uuid-like part, 128 random bits
// from crypto/rand. Nothing may parse the ID: it stays opaque to devices,
// hooks and clients. Its characters are safe to echo in a response topic.
func NewOperationID() (string, error) {
	var b [24]byte
	binary.BigEndian.PutUint64(b[:8], uint64(max(time.Now().UnixNano(), 0)))
	if _, err := rand.Read(b[8:]); err != nil {
		return "", fmt.Errorf("provisioning: operation ID: %w", err)
	}
	var out [len(operationIDVersion) + 16 + 1 + 36]byte
	n := copy(out[:], operationIDVersion)
	n += hex.Encode(out[n:], b[:8])
	out[n] = '.'
	n++
	u := b[8:]
	for i, part := range [][]byte{u[0:4], u[4:6], u[6:8], u[8:10], u[10:16]} {
		if i > 0 {
			out[n] = '-'
			n++
		}
		n += hex.Encode(out[n:], part)
	}
	return string(out[:n]), nil
}
