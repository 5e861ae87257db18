package redisstore

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/dpsbroker/dpsbroker/provisioning"
	"github.com/dpsbroker/dpsbroker/provisioning/store/redistest"
	"github.com/dpsbroker/dpsbroker/provisioning/store/storetest"
)

// benchEnrollment is the size of a real X.509 individual enrollment: a
// PEM client certificate dominates it.
func benchEnrollment(b *testing.B, id string) *provisioning.IndividualEnrollment {
	cert := storetest.NewCACertificate(b, id)
	return &provisioning.IndividualEnrollment{
		RegistrationID: id,
		DeviceID:       id,
		Attestation: provisioning.AttestationMechanism{Type: provisioning.AttestationX509, X509: &provisioning.X509Attestation{
			ClientCertificates: &provisioning.X509Certificates{Primary: &provisioning.X509CertificateWithInfo{Certificate: cert.PEM}},
		}},
		EnrollmentPolicy: provisioning.EnrollmentPolicy{
			IoTHubs:            []string{"hub-a.example", "hub-b.example"},
			AllocationPolicy:   provisioning.AllocationHashed,
			ProvisioningStatus: provisioning.StatusEnabled,
		},
	}
}

// BenchmarkRedisGetEnrollment: "cached" is the hit path (no Redis call),
// "cold" has caching disabled (one HMGET per call); "cold-miss" asks for an
// enrollment that does not exist, what every group device costs uncached.
func BenchmarkRedisGetEnrollment(b *testing.B) {
	srv := redistest.Shared(b)
	for _, bc := range []struct {
		name      string
		cacheSize int
		id        string
	}{
		{"cached", 0, "dev-1"},
		{"cold", -1, "dev-1"},
		{"cached-miss", 0, "nobody"},
		{"cold-miss", -1, "nobody"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			s := newEnv(b, srv).open(b, func(o *Options) { o.CacheSize = bc.cacheSize })
			ctx := context.Background()
			if _, err := s.PutEnrollment(ctx, benchEnrollment(b, "dev-1"), ""); err != nil {
				b.Fatal(err)
			}
			waitQuiet(b, s)
			b.ReportAllocs()
			for b.Loop() {
				_, err := s.GetEnrollment(ctx, bc.id)
				if err != nil && bc.id == "dev-1" {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkInvalidationLatency measures, per iteration, the time from the
// start of a write on one store to the moment another store on the same
// Redis has dropped its cached copy (its watcher sees the change, which is
// delivered right after the cache is invalidated). Reported as
// µs/invalidation; it includes the write's own round trip.
func BenchmarkInvalidationLatency(b *testing.B) {
	e := newEnv(b, redistest.Shared(b))
	a, other := e.open(b, nil), e.open(b, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	changes := other.WatchChanges(ctx)
	en := benchEnrollment(b, "dev-x")
	var total time.Duration
	n := 0
	for b.Loop() {
		start := time.Now()
		if _, err := a.PutEnrollment(ctx, en, ""); err != nil {
			b.Fatal(err)
		}
		for c := range changes {
			if c.Kind == provisioning.ChangeEnrollment && c.ID == "dev-x" {
				break
			}
		}
		total += time.Since(start)
		n++
	}
	if n > 0 {
		b.ReportMetric(float64(total.Microseconds())/float64(n), "µs/invalidation")
	}
}

// TestInvalidationLatency logs the write-to-invalidated latency between two
// stores; it asserts only the 1 s bound of the design.
func TestInvalidationLatency(t *testing.T) {
	e := newEnv(t, redistest.Shared(t))
	a, other := e.open(t, nil), e.open(t, nil)
	ctx := ctxT(t)
	changes := other.WatchChanges(ctx)
	var worst, sum time.Duration
	const rounds = 20
	for i := range rounds {
		id := fmt.Sprintf("dev-%d", i)
		start := time.Now()
		if _, err := a.PutEnrollment(ctx, &provisioning.IndividualEnrollment{RegistrationID: id}, ""); err != nil {
			t.Fatal(err)
		}
		storetest.WaitChange(t, changes, provisioning.Change{Kind: provisioning.ChangeEnrollment, ID: id}, time.Second)
		d := time.Since(start)
		sum += d
		worst = max(worst, d)
	}
	t.Logf("write on one store -> other store invalidated: mean %v, worst %v over %d writes", sum/rounds, worst, rounds)
}
