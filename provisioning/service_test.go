package provisioning_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dpsbroker/dpsbroker/provisioning"
	"github.com/dpsbroker/dpsbroker/provisioning/store/bolt"
	"github.com/dpsbroker/dpsbroker/provisioning/wire"
)

type serviceFixture struct {
	svc   *provisioning.Service
	store *bolt.Store
	now   time.Time
	mu    sync.Mutex
	pub   []*provisioning.Event
}

func (f *serviceFixture) clock() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

func (f *serviceFixture) advance(d time.Duration) {
	f.mu.Lock()
	f.now = f.now.Add(d)
	f.mu.Unlock()
}

func (f *serviceFixture) published() []*provisioning.Event {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*provisioning.Event(nil), f.pub...)
}

func newServiceFixture(t *testing.T, hubs ...string) *serviceFixture {
	t.Helper()
	st, err := bolt.Open(filepath.Join(t.TempDir(), "dps.db"), bolt.Options{})
	if err != nil {
		t.Fatalf("bolt.Open: %v", err)
	}
	t.Cleanup(func() { _ = st.Close() })
	linked := make([]provisioning.Hub, len(hubs))
	for i, h := range hubs {
		linked[i] = provisioning.Hub{HostName: h}
	}
	alloc, err := provisioning.NewAllocator(linked)
	if err != nil {
		t.Fatalf("NewAllocator: %v", err)
	}
	f := &serviceFixture{store: st, now: time.Now()}
	f.svc, err = provisioning.NewService(provisioning.ServiceOptions{
		Registrations: st, Operations: st, Events: st, Allocator: alloc,
		OperationTTL: time.Minute,
		Now:          f.clock,
		Node:         "node-1",
		Publish: func(ev *provisioning.Event) {
			f.mu.Lock()
			f.pub = append(f.pub, ev)
			f.mu.Unlock()
		},
	})
	if err != nil {
		t.Fatalf("NewService: %v", err)
	}
	return f
}

func groupAdmission(regID, groupID string, p provisioning.EnrollmentPolicy) *provisioning.Admission {
	return &provisioning.Admission{
		RegistrationID:  regID,
		AttestationType: provisioning.AttestationX509,
		Group:           &provisioning.EnrollmentGroup{EnrollmentGroupID: groupID, EnrollmentPolicy: p},
		CertificateInfo: &wire.X509CertificateInfo{SubjectName: "CN=" + regID},
		Explanation:     "group " + groupID,
	}
}

func TestNewServiceValidates(t *testing.T) {
	if _, err := provisioning.NewService(provisioning.ServiceOptions{}); err == nil {
		t.Fatal("NewService with no stores: want an error")
	}
}

func TestRegisterAssignsAndIsIdempotent(t *testing.T) {
	ctx := context.Background()
	f := newServiceFixture(t, "hub-a.example.net", "hub-b.example.net", "hub-c.example.net")
	adm := groupAdmission("dev-1", "group-a", provisioning.EnrollmentPolicy{})

	op1, err := f.svc.Register(ctx, adm, nil)
	if err != nil {
		t.Fatalf("Register: %v", err)
	}
	if op1.Status != provisioning.RegistrationAssigned || op1.Result == nil || op1.Result.AssignedHub == "" {
		t.Fatalf("first registration: %+v", op1)
	}
	if got := op1.Result; got.DeviceID != "dev-1" || got.EnrollmentGroupID != "group-a" ||
		got.Substatus != provisioning.SubstatusInitialAssignment || got.CertificateInfo == nil || got.ETag == "" {
		t.Fatalf("record: %+v", got)
	}
	if !regexp.MustCompile(`^5\.[0-9a-f]{16}\.[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`).MatchString(op1.OperationID) {
		t.Fatalf("operation ID %q does not have the opaque DPS shape", op1.OperationID)
	}

	for i := range 3 {
		op, err := f.svc.Register(ctx, adm, nil)
		if err != nil {
			t.Fatalf("Register again: %v", err)
		}
		if op.Result.AssignedHub != op1.Result.AssignedHub {
			t.Fatalf("registration %d moved the device from %q to %q", i+2, op1.Result.AssignedHub, op.Result.AssignedHub)
		}
		if op.OperationID == op1.OperationID {
			t.Fatal("two registrations share an operation ID")
		}
	}
	rec, err := f.store.GetRegistration(ctx, "DEV-1")
	if err != nil {
		t.Fatalf("GetRegistration: %v", err)
	}
	if rec.AssignedHub != op1.Result.AssignedHub || rec.Status != provisioning.RegistrationAssigned {
		t.Fatalf("stored record: %+v", rec)
	}

	events, err := f.store.ReadEvents(ctx, "", 100)
	if err != nil {
		t.Fatalf("ReadEvents: %v", err)
	}
	if len(events) != 4 {
		t.Fatalf("event log holds %d events, want 4", len(events))
	}
	ev := events[0]
	if ev.Type != provisioning.EventAssigned || ev.RegistrationID != "dev-1" || ev.AssignedHub != op1.Result.AssignedHub ||
		ev.OperationID != op1.OperationID || ev.EnrollmentGroupID != "group-a" || ev.Node != "node-1" || ev.Explanation == "" {
		t.Fatalf("event: %+v", ev)
	}
	pub := f.published()
	if len(pub) != 4 || pub[0].ID == "" || pub[0].ID != events[0].ID {
		t.Fatalf("published %d events (first %+v), want 4 with the log's IDs", len(pub), pub[0])
	}
}

func TestRegisterPolicies(t *testing.T) {
	ctx := context.Background()
	no := false
	tests := []struct {
		name     string
		policy   provisioning.EnrollmentPolicy
		wantHub  string
		wantCode int
	}{
		{name: "pinned hub", policy: provisioning.EnrollmentPolicy{IoTHubHostName: "hub-b.example.net"}, wantHub: "hub-b.example.net"},
		{name: "static over one of iotHubs", policy: provisioning.EnrollmentPolicy{AllocationPolicy: provisioning.AllocationStatic, IoTHubs: []string{"hub-a.example.net"}}, wantHub: "hub-a.example.net"},
		{name: "hub not linked", policy: provisioning.EnrollmentPolicy{IoTHubHostName: "elsewhere.example.net"}, wantCode: provisioning.CodeNoHubAssigned},
		{name: "custom allocation", policy: provisioning.EnrollmentPolicy{AllocationPolicy: provisioning.AllocationCustom}, wantCode: provisioning.CodeCustomAllocationFailed},
		{name: "keep hub on reprovision", policy: provisioning.EnrollmentPolicy{ReprovisionPolicy: &provisioning.ReprovisionPolicy{UpdateHubAssignment: &no}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newServiceFixture(t, "hub-a.example.net", "hub-b.example.net")
			op, err := f.svc.Register(ctx, groupAdmission("dev-x", "g", tc.policy), nil)
			if err != nil {
				t.Fatalf("Register: %v", err)
			}
			if tc.wantCode != 0 {
				if op.Status != provisioning.RegistrationFailed || op.Result.ErrorCode != tc.wantCode || op.Result.AssignedHub != "" {
					t.Fatalf("want failed with %d, got %+v", tc.wantCode, op.Result)
				}
				ev, _ := f.store.ReadEvents(ctx, "", 10)
				if len(ev) != 1 || ev[0].Type != provisioning.EventFailed || ev[0].ErrorCode != tc.wantCode {
					t.Fatalf("events: %+v", ev)
				}
				return
			}
			if op.Status != provisioning.RegistrationAssigned {
				t.Fatalf("status %q: %+v", op.Status, op.Result)
			}
			if tc.wantHub != "" && op.Result.AssignedHub != tc.wantHub {
				t.Fatalf("hub %q, want %q", op.Result.AssignedHub, tc.wantHub)
			}
		})
	}
}

func TestRegisterReprovisionSubstatus(t *testing.T) {
	ctx := context.Background()
	f := newServiceFixture(t, "hub-a.example.net", "hub-b.example.net")
	pin := func(hub string, migrate *bool) *provisioning.Admission {
		return groupAdmission("dev-m", "g", provisioning.EnrollmentPolicy{IoTHubHostName: hub,
			ReprovisionPolicy: &provisioning.ReprovisionPolicy{MigrateDeviceData: migrate}})
	}
	no := false
	steps := []struct {
		adm           *provisioning.Admission
		hub, substate string
	}{
		{pin("hub-a.example.net", nil), "hub-a.example.net", provisioning.SubstatusInitialAssignment},
		{pin("hub-a.example.net", nil), "hub-a.example.net", provisioning.SubstatusInitialAssignment},
		{pin("hub-b.example.net", nil), "hub-b.example.net", provisioning.SubstatusDeviceDataMigrated},
		{pin("hub-a.example.net", &no), "hub-a.example.net", provisioning.SubstatusDeviceDataReset},
	}
	for i, s := range steps {
		op, err := f.svc.Register(ctx, s.adm, nil)
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		if op.Result.AssignedHub != s.hub || op.Result.Substatus != s.substate {
			t.Fatalf("step %d: hub %q substatus %q, want %q %q", i, op.Result.AssignedHub, op.Result.Substatus, s.hub, s.substate)
		}
	}
}

func TestRegisterConcurrentSameDevice(t *testing.T) {
	ctx := context.Background()
	f := newServiceFixture(t, "hub-a.example.net", "hub-b.example.net", "hub-c.example.net")
	adm := groupAdmission("dev-race", "g", provisioning.EnrollmentPolicy{})
	var wg sync.WaitGroup
	hubs := make([]string, 8)
	errs := make([]error, 8)
	for i := range hubs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			op, err := f.svc.Register(ctx, adm, nil)
			errs[i] = err
			if err == nil {
				hubs[i] = op.Result.AssignedHub
			}
		}()
	}
	wg.Wait()
	for i := range hubs {
		if errs[i] != nil {
			t.Fatalf("Register %d: %v", i, errs[i])
		}
		if hubs[i] != hubs[0] {
			t.Fatalf("concurrent registrations disagree: %q vs %q", hubs[i], hubs[0])
		}
	}
}

func TestOperationLookup(t *testing.T) {
	ctx := context.Background()
	f := newServiceFixture(t, "hub-a.example.net")
	op, err := f.svc.Register(ctx, groupAdmission("dev-1", "g", provisioning.EnrollmentPolicy{}), nil)
	if err != nil {
		t.Fatalf("Register: %v", err)
	}
	got, err := f.svc.Operation(ctx, "DEV-1", op.OperationID)
	if err != nil {
		t.Fatalf("Operation (case-insensitive owner): %v", err)
	}
	if got.Result == nil || got.Result.AssignedHub != "hub-a.example.net" {
		t.Fatalf("operation: %+v", got)
	}
	for _, tc := range []struct{ name, reg, op string }{
		{"unknown operation", "dev-1", "5.0000000000000000.00000000-0000-0000-0000-000000000000"},
		{"another device's operation", "dev-2", op.OperationID},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := f.svc.Operation(ctx, tc.reg, tc.op); !errors.Is(err, provisioning.ErrNotFound) {
				t.Fatalf("err = %v, want ErrNotFound", err)
			}
		})
	}
	t.Run("expired", func(t *testing.T) {
		f.advance(2 * time.Minute)
		if _, err := f.svc.Operation(ctx, "dev-1", op.OperationID); !errors.Is(err, provisioning.ErrNotFound) {
			t.Fatalf("err = %v, want ErrNotFound", err)
		}
	})
}

func TestRefusedRecordsEvent(t *testing.T) {
	ctx := context.Background()
	f := newServiceFixture(t, "hub-a.example.net")
	f.svc.Refused(ctx, &provisioning.Event{RegistrationID: "dev-9", ErrorCode: 401002, Reason: "groupDisabled",
		AttestationType: provisioning.AttestationX509, EnrollmentGroupID: "group-b"})
	events, err := f.store.ReadEvents(ctx, "", 10)
	if err != nil || len(events) != 1 {
		t.Fatalf("ReadEvents: %v, %d events", err, len(events))
	}
	ev := events[0]
	if ev.Type != provisioning.EventRefused || ev.Node != "node-1" || ev.Time.IsZero() || ev.ErrorCode != 401002 || ev.EnrollmentGroupID != "group-b" {
		t.Fatalf("event: %+v", ev)
	}
	if pub := f.published(); len(pub) != 1 || pub[0].ID != ev.ID {
		t.Fatalf("published: %+v", pub)
	}
}

// countingStore counts the writes that reach the store.
type countingStore struct {
	*bolt.Store
	puts, ops, events, commits atomic.Int64
}

func (c *countingStore) PutRegistration(ctx context.Context, r *provisioning.RegistrationState, ifMatch string) (*provisioning.RegistrationState, error) {
	c.puts.Add(1)
	return c.Store.PutRegistration(ctx, r, ifMatch)
}

func (c *countingStore) PutOperation(ctx context.Context, op *provisioning.Operation) error {
	c.ops.Add(1)
	return c.Store.PutOperation(ctx, op)
}

func (c *countingStore) AppendEvent(ctx context.Context, ev *provisioning.Event) (string, error) {
	c.events.Add(1)
	return c.Store.AppendEvent(ctx, ev)
}

func (c *countingStore) CommitRegistration(ctx context.Context, rc *provisioning.RegistrationCommit) (*provisioning.RegistrationState, string, error) {
	c.commits.Add(1)
	return c.Store.CommitRegistration(ctx, rc)
}

func (c *countingStore) writes() [4]int64 {
	return [4]int64{c.commits.Load(), c.puts.Load(), c.ops.Load(), c.events.Load()}
}

// Hiding wrappers: embedding only the interface drops CommitRegistration.
type (
	plainRegs   struct{ provisioning.RegistrationStore }
	plainOps    struct{ provisioning.OperationStore }
	plainEvents struct{ provisioning.EventLog }
)

func TestRegisterStoreWrites(t *testing.T) {
	ctx := context.Background()
	alloc, err := provisioning.NewAllocator([]provisioning.Hub{{HostName: "hub-a.example.net"}})
	if err != nil {
		t.Fatal(err)
	}
	st, err := bolt.Open(filepath.Join(t.TempDir(), "dps.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	// [commits, record puts, operation puts, event appends] per Register.
	for _, tc := range []struct {
		name string
		opts func(c *countingStore) provisioning.ServiceOptions
		want [4]int64
	}{
		{"one store: one commit", func(c *countingStore) provisioning.ServiceOptions {
			return provisioning.ServiceOptions{Registrations: c, Operations: c, Events: c}
		}, [4]int64{1, 0, 0, 0}},
		{"stores without a commit: three writes", func(c *countingStore) provisioning.ServiceOptions {
			return provisioning.ServiceOptions{Registrations: plainRegs{c}, Operations: plainOps{c}, Events: plainEvents{c}}
		}, [4]int64{0, 1, 1, 1}},
		{"different stores: three writes", func(c *countingStore) provisioning.ServiceOptions {
			return provisioning.ServiceOptions{Registrations: c, Operations: plainOps{c}, Events: c}
		}, [4]int64{0, 1, 1, 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &countingStore{Store: st}
			opts := tc.opts(c)
			opts.Allocator = alloc
			svc, err := provisioning.NewService(opts)
			if err != nil {
				t.Fatal(err)
			}
			regID := "dev-w-" + strings.ReplaceAll(tc.name, " ", "-")
			for round := range 3 {
				before := c.writes()
				op, err := svc.Register(ctx, groupAdmission(regID, "g", provisioning.EnrollmentPolicy{}), nil)
				if err != nil {
					t.Fatalf("round %d: %v", round, err)
				}
				after := c.writes()
				var got [4]int64
				for i := range got {
					got[i] = after[i] - before[i]
				}
				if got != tc.want {
					t.Errorf("round %d: writes [commit put op event] = %v, want %v", round, got, tc.want)
				}
				stored, err := st.GetOperation(ctx, op.OperationID)
				if err != nil {
					t.Fatalf("round %d: GetOperation: %v", round, err)
				}
				if stored.Result == nil || stored.Result.ETag != op.Result.ETag || op.Result.ETag == "" {
					t.Errorf("round %d: stored operation result %+v, returned %+v", round, stored.Result, op.Result)
				}
			}
		})
	}
}

func TestNewOperationIDUnique(t *testing.T) {
	seen := make(map[string]bool)
	for range 1000 {
		id, err := provisioning.NewOperationID()
		if err != nil {
			t.Fatal(err)
		}
		if seen[id] {
			t.Fatalf("duplicate operation ID %q", id)
		}
		seen[id] = true
	}
}

// Operation IDs sort by creation time, so that the embedded store appends
// operations at the end of its bucket instead of all over it.
func TestNewOperationIDSortsByCreation(t *testing.T) {
	prev, err := provisioning.NewOperationID()
	if err != nil {
		t.Fatal(err)
	}
	for range 100 {
		time.Sleep(time.Microsecond)
		id, err := provisioning.NewOperationID()
		if err != nil {
			t.Fatal(err)
		}
		if id <= prev {
			t.Fatalf("operation ID %q made after %q sorts before it", id, prev)
		}
		prev = id
	}
}

// BenchmarkRegister measures Service.Register on the embedded store with
// durable commits (fsync on), as the broker runs it: "serial" is one device
// at a time (the latency of one registration), "parallel" keeps 32
// registrations in flight (a fleet connecting), where commits can share an
// fsync. Every iteration registers a device not seen before.
func BenchmarkRegister(b *testing.B) {
	for _, bc := range []struct {
		name        string
		parallelism int
	}{{"serial", 0}, {"parallel", 16}} {
		b.Run(bc.name, func(b *testing.B) {
			st, err := bolt.Open(filepath.Join(b.TempDir(), "dps.db"), bolt.Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer st.Close()
			benchRegister(b, st, bc.parallelism)
		})
	}
}

// benchRegister runs Register on st with unique registration IDs: serially
// when parallelism is 0, else with parallelism*GOMAXPROCS goroutines.
func benchRegister(b *testing.B, st provisioning.Store, parallelism int) {
	b.Helper()
	alloc, _ := provisioning.NewAllocator([]provisioning.Hub{{HostName: "hub-a.example.net"}, {HostName: "hub-b.example.net"}})
	svc, err := provisioning.NewService(provisioning.ServiceOptions{Registrations: st, Operations: st, Events: st, Allocator: alloc,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	var seq atomic.Int64
	register := func() {
		adm := groupAdmission(fmt.Sprintf("dev-bench-%d", seq.Add(1)), "g", provisioning.EnrollmentPolicy{})
		if _, err := svc.Register(ctx, adm, nil); err != nil {
			b.Error(err)
		}
	}
	b.ReportAllocs()
	if parallelism == 0 {
		for b.Loop() {
			register()
		}
		return
	}
	b.SetParallelism(parallelism)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			register()
		}
	})
}
