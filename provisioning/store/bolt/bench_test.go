package bolt

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/dpsbroker/dpsbroker/provisioning"
)

// BenchmarkBoltGetEnrollment measures the read path of a device connect:
// one enrollment read (a bbolt read transaction plus JSON decode) from a
// store holding 10,000 enrollments.
func BenchmarkBoltGetEnrollment(b *testing.B) {
	ctx := context.Background()
	s, err := Open(filepath.Join(b.TempDir(), "bench.db"), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	const n = 10_000
	// Loading is not what is measured: skip the per-commit fsync.
	s.db.NoSync = true
	for i := range n {
		e := &provisioning.IndividualEnrollment{
			RegistrationID: fmt.Sprintf("device-%05d", i),
			Attestation: provisioning.AttestationMechanism{
				Type:         provisioning.AttestationSymmetricKey,
				SymmetricKey: &provisioning.SymmetricKeyAttestation{PrimaryKey: "cHJpbWFyeWtleXByaW1hcnlrZXlwcmltYXJ5a2V5", SecondaryKey: "c2Vjb25kYXJ5a2V5c2Vjb25kYXJ5a2V5"},
			},
			EnrollmentPolicy: provisioning.EnrollmentPolicy{IoTHubs: []string{"hub-1.example", "hub-2.example"}, AllocationPolicy: provisioning.AllocationHashed},
		}
		if _, err := s.PutEnrollment(ctx, e, ""); err != nil {
			b.Fatal(err)
		}
	}
	s.db.NoSync = false
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("Device-%05d", i)
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if _, err := s.GetEnrollment(ctx, keys[i%n]); err != nil {
				b.Fatal(err)
			}
			i += 7919
		}
	})
}
