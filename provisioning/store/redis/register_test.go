package redisstore

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"testing"

	"github.com/dpsbroker/dpsbroker/provisioning"
	"github.com/dpsbroker/dpsbroker/provisioning/store/redistest"
	"github.com/dpsbroker/dpsbroker/provisioning/wire"
)

// newService returns a Service registering into s.
func newService(tb testing.TB, s *Store) *provisioning.Service {
	tb.Helper()
	alloc, err := provisioning.NewAllocator([]provisioning.Hub{{HostName: "hub-a.example.net"}, {HostName: "hub-b.example.net"}})
	if err != nil {
		tb.Fatal(err)
	}
	svc, err := provisioning.NewService(provisioning.ServiceOptions{Registrations: s, Operations: s, Events: s, Allocator: alloc,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		tb.Fatal(err)
	}
	return svc
}

func admission(regID string) *provisioning.Admission {
	return &provisioning.Admission{
		RegistrationID:  regID,
		AttestationType: provisioning.AttestationX509,
		Group:           &provisioning.EnrollmentGroup{EnrollmentGroupID: "group-a"},
		CertificateInfo: &wire.X509CertificateInfo{SubjectName: "CN=" + regID},
		Explanation:     "group group-a",
	}
}

// TestRegisterRoundTrips pins the cost of a registration on Redis: one
// HMGET for the current record (the allocation needs the current hub) and
// one script for the whole commit, for a first registration and for a
// re-registration alike.
func TestRegisterRoundTrips(t *testing.T) {
	e := newEnv(t, redistest.Shared(t))
	rdb, calls := e.countingClient(t)
	s := e.open(t, func(o *Options) { o.Client = rdb })
	svc := newService(t, s)
	ctx := ctxT(t)
	var etag string
	for round := range 3 {
		before := calls.n.Load()
		op, err := svc.Register(ctx, admission("dev-rt"), nil)
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		if got := calls.n.Load() - before; got != 2 {
			t.Errorf("round %d: %d Redis round trips, want 2", round, got)
		}
		if op.Result == nil || op.Result.ETag == "" || op.Result.ETag == etag || op.Result.AssignedHub == "" {
			t.Fatalf("round %d: result %+v", round, op.Result)
		}
		etag = op.Result.ETag
		stored, err := s.GetOperation(ctx, op.OperationID)
		if err != nil {
			t.Fatal(err)
		}
		if stored.Result == nil || stored.Result.ETag != etag || !stored.Result.CreatedDateTimeUTC.Equal(*op.Result.CreatedDateTimeUTC) {
			t.Errorf("round %d: stored operation result %+v, returned %+v", round, stored.Result, op.Result)
		}
	}
	evs, err := s.ReadEvents(ctx, "", 10)
	if err != nil || len(evs) != 3 {
		t.Fatalf("events: %d, %v; want 3", len(evs), err)
	}
}

// BenchmarkRedisRegister measures Service.Register on the Redis store:
// "serial" is the latency of one registration, "parallel" keeps 16 per
// core in flight. Every iteration registers a device not seen before.
func BenchmarkRedisRegister(b *testing.B) {
	srv := redistest.Shared(b)
	for _, bc := range []struct {
		name        string
		parallelism int
	}{{"serial", 0}, {"parallel", 16}} {
		b.Run(bc.name, func(b *testing.B) {
			svc := newService(b, newEnv(b, srv).open(b, nil))
			ctx := context.Background()
			var seq atomic.Int64
			register := func() {
				if _, err := svc.Register(ctx, admission(fmt.Sprintf("dev-%d", seq.Add(1))), nil); err != nil {
					b.Error(err)
				}
			}
			b.ReportAllocs()
			if bc.parallelism == 0 {
				for b.Loop() {
					register()
				}
				return
			}
			b.SetParallelism(bc.parallelism)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					register()
				}
			})
		})
	}
}
