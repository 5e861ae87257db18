package storetest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dpsbroker/dpsbroker/provisioning"
)

// meta is what the generic CRUD tests look at in any entity: its ID, etag,
// timestamps and one content field (marker) that each write changes.
type meta struct {
	ID      string
	ETag    string
	Marker  string
	Created *time.Time
	Updated *time.Time
}

// entity adapts one entry type of the store to the generic CRUD tests.
type entity struct {
	name   string
	change provisioning.ChangeKind // "" when writes are not watched
	put    func(ctx context.Context, s provisioning.Store, id, marker, ifMatch string) (meta, error)
	get    func(ctx context.Context, s provisioning.Store, id string) (meta, error)
	del    func(ctx context.Context, s provisioning.Store, id, ifMatch string) error
}

func entities(t *testing.T) []entity {
	ca := NewCACertificate(t, "crud-ca")
	return []entity{
		{
			name:   "Enrollment",
			change: provisioning.ChangeEnrollment,
			put: func(ctx context.Context, s provisioning.Store, id, marker, ifMatch string) (meta, error) {
				e, err := s.PutEnrollment(ctx, testEnrollment(id, marker), ifMatch)
				if err != nil || e == nil {
					return meta{}, errOrNil(err, "PutEnrollment")
				}
				return meta{e.RegistrationID, e.ETag, e.DeviceID, e.CreatedDateTimeUTC, e.LastUpdatedDateTimeUTC}, nil
			},
			get: func(ctx context.Context, s provisioning.Store, id string) (meta, error) {
				e, err := s.GetEnrollment(ctx, id)
				if err != nil || e == nil {
					return meta{}, errOrNil(err, "GetEnrollment")
				}
				return meta{e.RegistrationID, e.ETag, e.DeviceID, e.CreatedDateTimeUTC, e.LastUpdatedDateTimeUTC}, nil
			},
			del: func(ctx context.Context, s provisioning.Store, id, ifMatch string) error {
				return s.DeleteEnrollment(ctx, id, ifMatch)
			},
		},
		{
			name:   "Group",
			change: provisioning.ChangeGroup,
			put: func(ctx context.Context, s provisioning.Store, id, marker, ifMatch string) (meta, error) {
				g, err := s.PutEnrollmentGroup(ctx, testGroup(id, marker), ifMatch)
				if err != nil || g == nil {
					return meta{}, errOrNil(err, "PutEnrollmentGroup")
				}
				return meta{g.EnrollmentGroupID, g.ETag, g.IoTHubHostName, g.CreatedDateTimeUTC, g.LastUpdatedDateTimeUTC}, nil
			},
			get: func(ctx context.Context, s provisioning.Store, id string) (meta, error) {
				g, err := s.GetEnrollmentGroup(ctx, id)
				if err != nil || g == nil {
					return meta{}, errOrNil(err, "GetEnrollmentGroup")
				}
				return meta{g.EnrollmentGroupID, g.ETag, g.IoTHubHostName, g.CreatedDateTimeUTC, g.LastUpdatedDateTimeUTC}, nil
			},
			del: func(ctx context.Context, s provisioning.Store, id, ifMatch string) error {
				return s.DeleteEnrollmentGroup(ctx, id, ifMatch)
			},
		},
		{
			name:   "CACertificate",
			change: provisioning.ChangeCA,
			put: func(ctx context.Context, s provisioning.Store, id, marker, ifMatch string) (meta, error) {
				c, err := s.PutCACertificate(ctx, &provisioning.CACertificate{Name: id, Certificate: ca.PEM, VerificationCode: marker}, ifMatch)
				if err != nil || c == nil {
					return meta{}, errOrNil(err, "PutCACertificate")
				}
				return meta{c.Name, c.ETag, c.VerificationCode, c.Created, c.Updated}, nil
			},
			get: func(ctx context.Context, s provisioning.Store, id string) (meta, error) {
				c, err := s.GetCACertificate(ctx, id)
				if err != nil || c == nil {
					return meta{}, errOrNil(err, "GetCACertificate")
				}
				return meta{c.Name, c.ETag, c.VerificationCode, c.Created, c.Updated}, nil
			},
			del: func(ctx context.Context, s provisioning.Store, id, ifMatch string) error {
				return s.DeleteCACertificate(ctx, id, ifMatch)
			},
		},
		{
			name: "Registration",
			put: func(ctx context.Context, s provisioning.Store, id, marker, ifMatch string) (meta, error) {
				r, err := s.PutRegistration(ctx, testRegistration(id, "", marker), ifMatch)
				if err != nil || r == nil {
					return meta{}, errOrNil(err, "PutRegistration")
				}
				return meta{r.RegistrationID, r.ETag, r.AssignedHub, r.CreatedDateTimeUTC, r.LastUpdatedDateTimeUTC}, nil
			},
			get: func(ctx context.Context, s provisioning.Store, id string) (meta, error) {
				r, err := s.GetRegistration(ctx, id)
				if err != nil || r == nil {
					return meta{}, errOrNil(err, "GetRegistration")
				}
				return meta{r.RegistrationID, r.ETag, r.AssignedHub, r.CreatedDateTimeUTC, r.LastUpdatedDateTimeUTC}, nil
			},
			del: func(ctx context.Context, s provisioning.Store, id, ifMatch string) error {
				return s.DeleteRegistration(ctx, id, ifMatch)
			},
		},
	}
}

// errOrNil turns a (nil, nil) answer into an error so that the adapters
// never hand a zero meta to a test as a success.
func errOrNil(err error, op string) error {
	if err != nil {
		return err
	}
	return fmt.Errorf("%s returned nil value and nil error", op)
}

func testEnrollment(id, deviceID string) *provisioning.IndividualEnrollment {
	return &provisioning.IndividualEnrollment{
		RegistrationID: id,
		DeviceID:       deviceID,
		Attestation: provisioning.AttestationMechanism{
			Type:         provisioning.AttestationSymmetricKey,
			SymmetricKey: &provisioning.SymmetricKeyAttestation{PrimaryKey: "cHJpbWFyeQ==", SecondaryKey: "c2Vjb25kYXJ5"},
		},
		EnrollmentPolicy: provisioning.EnrollmentPolicy{
			IoTHubs:            []string{"hub-a.example", "hub-b.example"},
			AllocationPolicy:   provisioning.AllocationHashed,
			ProvisioningStatus: provisioning.StatusEnabled,
		},
	}
}

func testGroup(id, hub string) *provisioning.EnrollmentGroup {
	return &provisioning.EnrollmentGroup{
		EnrollmentGroupID: id,
		Attestation: provisioning.AttestationMechanism{
			Type:         provisioning.AttestationSymmetricKey,
			SymmetricKey: &provisioning.SymmetricKeyAttestation{PrimaryKey: "Z3JvdXA="},
		},
		EnrollmentPolicy: provisioning.EnrollmentPolicy{
			IoTHubHostName:     hub,
			IoTHubs:            []string{hub},
			ProvisioningStatus: provisioning.StatusEnabled,
		},
	}
}

func testRegistration(id, groupID, hub string) *provisioning.RegistrationState {
	return &provisioning.RegistrationState{
		RegistrationID:    id,
		DeviceID:          id,
		AssignedHub:       hub,
		Status:            provisioning.RegistrationAssigned,
		Substatus:         provisioning.SubstatusInitialAssignment,
		EnrollmentGroupID: groupID,
		AttestationType:   provisioning.AttestationX509,
	}
}

func runCRUD(t *testing.T, newStore func(t *testing.T) provisioning.Store) {
	for _, en := range entities(t) {
		t.Run(en.name, func(t *testing.T) {
			t.Run("GetMissing", func(t *testing.T) {
				s := newStore(t)
				if _, err := en.get(ctxT(t), s, "nobody"); !errors.Is(err, provisioning.ErrNotFound) {
					t.Fatalf("get missing: err = %v, want ErrNotFound", err)
				}
			})
			t.Run("CreateGetReplace", func(t *testing.T) { testCreateGetReplace(t, newStore(t), en) })
			t.Run("IfMatch", func(t *testing.T) { testIfMatch(t, newStore(t), en) })
			t.Run("CaseInsensitiveID", func(t *testing.T) { testCaseInsensitive(t, newStore(t), en) })
			t.Run("ConcurrentEtagWriters", func(t *testing.T) { testConcurrentWriters(t, newStore(t), en) })
			t.Run("ConcurrentEtagDeleters", func(t *testing.T) { testConcurrentDeleters(t, newStore(t), en) })
			t.Run("EmptyID", func(t *testing.T) {
				s := newStore(t)
				ctx := ctxT(t)
				if _, err := en.put(ctx, s, "", "m", ""); err == nil {
					t.Error("put with empty ID: no error")
				}
				if _, err := en.get(ctx, s, ""); err == nil {
					t.Error("get with empty ID: no error")
				}
				if err := en.del(ctx, s, "", ""); err == nil {
					t.Error("delete with empty ID: no error")
				}
			})
			t.Run("CancelledContext", func(t *testing.T) {
				s := newStore(t)
				ctx, cancel := context.WithCancel(context.Background())
				cancel()
				if _, err := en.put(ctx, s, "ctx-1", "m", ""); !errors.Is(err, context.Canceled) {
					t.Errorf("put with cancelled ctx: err = %v, want context.Canceled", err)
				}
				if _, err := en.get(ctx, s, "ctx-1"); !errors.Is(err, context.Canceled) {
					t.Errorf("get with cancelled ctx: err = %v, want context.Canceled", err)
				}
			})
		})
	}
}

func testCreateGetReplace(t *testing.T, s provisioning.Store, en entity) {
	ctx := ctxT(t)
	first, err := en.put(ctx, s, "item-1", "one", "")
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	if first.ETag == "" || first.Created == nil || first.Updated == nil || first.Created.IsZero() {
		t.Fatalf("create: want etag and timestamps assigned, got %+v", first)
	}
	if first.Updated.Before(*first.Created) {
		t.Errorf("create: updated %v before created %v", first.Updated, first.Created)
	}
	if first.ID != "item-1" || first.Marker != "one" {
		t.Errorf("create returned %+v, want ID item-1 marker one", first)
	}
	got, err := en.get(ctx, s, "item-1")
	if err != nil {
		t.Fatalf("get: %v", err)
	}
	if got.ETag != first.ETag || got.Marker != "one" || !got.Created.Equal(*first.Created) || !got.Updated.Equal(*first.Updated) {
		t.Errorf("get = %+v, want what Put returned %+v", got, first)
	}

	// The clock must move for "LastUpdated advances" to be checkable; the
	// sleep is not a timing assertion.
	time.Sleep(20 * time.Millisecond)
	second, err := en.put(ctx, s, "item-1", "two", "")
	if err != nil {
		t.Fatalf("replace: %v", err)
	}
	if second.ETag == "" || second.ETag == first.ETag {
		t.Errorf("replace: etag %q, want a new non-empty one (was %q)", second.ETag, first.ETag)
	}
	if second.Created == nil || !second.Created.Equal(*first.Created) {
		t.Errorf("replace: created = %v, want kept %v", second.Created, first.Created)
	}
	if second.Updated == nil || !second.Updated.After(*first.Updated) {
		t.Errorf("replace: updated = %v, want after %v", second.Updated, first.Updated)
	}
	if got, err := en.get(ctx, s, "item-1"); err != nil || got.Marker != "two" || got.ETag != second.ETag {
		t.Errorf("get after replace = %+v, %v; want marker two etag %q", got, err, second.ETag)
	}

	// Every write yields a fresh etag.
	seen := map[string]bool{first.ETag: true, second.ETag: true}
	for i := range 5 {
		m, err := en.put(ctx, s, "item-1", fmt.Sprint("w", i), "")
		if err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		if seen[m.ETag] {
			t.Fatalf("write %d reused etag %q", i, m.ETag)
		}
		seen[m.ETag] = true
	}

	if err := en.del(ctx, s, "item-1", ""); err != nil {
		t.Fatalf("delete: %v", err)
	}
	if _, err := en.get(ctx, s, "item-1"); !errors.Is(err, provisioning.ErrNotFound) {
		t.Errorf("get after delete: err = %v, want ErrNotFound", err)
	}
	// Recreating starts a new life: a new created time.
	time.Sleep(20 * time.Millisecond)
	again, err := en.put(ctx, s, "item-1", "three", "")
	if err != nil {
		t.Fatalf("recreate: %v", err)
	}
	if !again.Created.After(*first.Created) {
		t.Errorf("recreate: created %v, want after the deleted entry's %v", again.Created, first.Created)
	}
}

func testIfMatch(t *testing.T, s provisioning.Store, en entity) {
	ctx := ctxT(t)
	pf := provisioning.ErrPreconditionFailed
	nf := provisioning.ErrNotFound
	wantErr := func(what string, err, want error) {
		t.Helper()
		if !errors.Is(err, want) {
			t.Errorf("%s: err = %v, want %v", what, err, want)
		}
	}
	wantMarker := func(what, marker string) {
		t.Helper()
		got, err := en.get(ctx, s, "x")
		if err != nil || got.Marker != marker {
			t.Errorf("%s: stored %+v, %v; want marker %q", what, got, err, marker)
		}
	}
	wantMissing := func(what string) {
		t.Helper()
		if _, err := en.get(ctx, s, "x"); !errors.Is(err, nf) {
			t.Errorf("%s: get err = %v, want ErrNotFound", what, err)
		}
	}

	// Missing entry: any non-empty ifMatch fails, for Put and Delete alike.
	_, err := en.put(ctx, s, "x", "m0", "*")
	wantErr(`put "*" on missing`, err, pf)
	wantMissing(`put "*" on missing`)
	_, err = en.put(ctx, s, "x", "m0", "some-etag")
	wantErr("put etag on missing", err, pf)
	wantMissing("put etag on missing")
	wantErr(`delete "" on missing`, en.del(ctx, s, "x", ""), nf)
	wantErr(`delete "*" on missing`, en.del(ctx, s, "x", "*"), pf)
	wantErr("delete etag on missing", en.del(ctx, s, "x", "some-etag"), pf)

	v1, err := en.put(ctx, s, "x", "m1", "")
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	_, err = en.put(ctx, s, "x", "bad", v1.ETag+"-not")
	wantErr("put with wrong etag", err, pf)
	wantMarker("put with wrong etag", "m1")

	v2, err := en.put(ctx, s, "x", "m2", v1.ETag)
	if err != nil {
		t.Fatalf("put with current etag: %v", err)
	}
	if v2.ETag == v1.ETag {
		t.Errorf("etag did not change on conditional write")
	}
	wantMarker("put with current etag", "m2")

	_, err = en.put(ctx, s, "x", "bad", v1.ETag)
	wantErr("put with stale etag", err, pf)
	wantMarker("put with stale etag", "m2")

	v3, err := en.put(ctx, s, "x", "m3", "*")
	if err != nil {
		t.Fatalf(`put "*" on existing: %v`, err)
	}
	wantMarker(`put "*" on existing`, "m3")

	wantErr("delete with stale etag", en.del(ctx, s, "x", v2.ETag), pf)
	wantMarker("delete with stale etag", "m3")
	if err := en.del(ctx, s, "x", v3.ETag); err != nil {
		t.Fatalf("delete with current etag: %v", err)
	}
	wantMissing("delete with current etag")

	if _, err := en.put(ctx, s, "x", "m4", ""); err != nil {
		t.Fatalf("recreate: %v", err)
	}
	if err := en.del(ctx, s, "x", "*"); err != nil {
		t.Fatalf(`delete "*" on existing: %v`, err)
	}
	wantMissing(`delete "*"`)
}

func testCaseInsensitive(t *testing.T, s provisioning.Store, en entity) {
	ctx := ctxT(t)
	if _, err := en.put(ctx, s, "Mixed-Case.ID", "one", ""); err != nil {
		t.Fatalf("create: %v", err)
	}
	for _, id := range []string{"Mixed-Case.ID", "mixed-case.id", "MIXED-CASE.ID"} {
		got, err := en.get(ctx, s, id)
		if err != nil {
			t.Fatalf("get %q: %v", id, err)
		}
		if !strings.EqualFold(got.ID, "mixed-case.id") || got.Marker != "one" {
			t.Errorf("get %q = %+v", id, got)
		}
	}
	// Writing under another spelling replaces the same entry.
	m, err := en.put(ctx, s, "MIXED-case.id", "two", "*")
	if err != nil {
		t.Fatalf("replace under another spelling: %v", err)
	}
	if err := en.del(ctx, s, "mixed-CASE.id", m.ETag); err != nil {
		t.Fatalf("delete under another spelling: %v", err)
	}
	for _, id := range []string{"Mixed-Case.ID", "mixed-case.id"} {
		if _, err := en.get(ctx, s, id); !errors.Is(err, provisioning.ErrNotFound) {
			t.Errorf("get %q after delete: err = %v, want ErrNotFound", id, err)
		}
	}
}

// concurrency is how many writers race on one etag.
const concurrency = 8

func testConcurrentWriters(t *testing.T, s provisioning.Store, en entity) {
	ctx := ctxT(t)
	base, err := en.put(ctx, s, "race", "base", "")
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	type result struct {
		marker string
		m      meta
		err    error
	}
	results := make([]result, concurrency)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range concurrency {
		wg.Go(func() {
			<-start
			marker := fmt.Sprint("writer-", i)
			m, err := en.put(ctx, s, "race", marker, base.ETag)
			results[i] = result{marker, m, err}
		})
	}
	close(start)
	wg.Wait()
	var winners []result
	for _, r := range results {
		switch {
		case r.err == nil:
			winners = append(winners, r)
		case !errors.Is(r.err, provisioning.ErrPreconditionFailed):
			t.Errorf("%s: err = %v, want nil or ErrPreconditionFailed", r.marker, r.err)
		}
	}
	if len(winners) != 1 {
		t.Fatalf("%d writers won with the same etag, want exactly 1", len(winners))
	}
	got, err := en.get(ctx, s, "race")
	if err != nil {
		t.Fatalf("get: %v", err)
	}
	if got.Marker != winners[0].marker || got.ETag != winners[0].m.ETag {
		t.Errorf("stored %+v, want the winner's write %+v", got, winners[0].m)
	}
}

func testConcurrentDeleters(t *testing.T, s provisioning.Store, en entity) {
	ctx := ctxT(t)
	base, err := en.put(ctx, s, "race", "base", "")
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	errs := make([]error, concurrency)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range concurrency {
		wg.Go(func() {
			<-start
			errs[i] = en.del(ctx, s, "race", base.ETag)
		})
	}
	close(start)
	wg.Wait()
	wins := 0
	for i, err := range errs {
		switch {
		case err == nil:
			wins++
		case !errors.Is(err, provisioning.ErrPreconditionFailed):
			t.Errorf("deleter %d: err = %v, want nil or ErrPreconditionFailed", i, err)
		}
	}
	if wins != 1 {
		t.Fatalf("%d deleters won with the same etag, want exactly 1", wins)
	}
}
