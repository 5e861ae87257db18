package bolt

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/dpsbroker/dpsbroker/provisioning"
	"github.com/dpsbroker/dpsbroker/provisioning/wire"
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

// BenchmarkCommitRegistrationLargeDB measures one registration commit (the
// record, the operation and the event in one transaction with its fsync),
// committed one at a time, on a fresh file and on one that already went
// through the life of a busy broker: 50k registrations with their events,
// whose 50k operations were then swept (their pages are free).
//
// Besides time it reports bytes handed to write(2) per commit (wchar from
// /proc/self/io) and the size of the freelist, which bbolt writes on every
// commit unless NoFreelistSync is set.
func BenchmarkCommitRegistrationLargeDB(b *testing.B) {
	for _, size := range []int{0, 50_000} {
		for _, fl := range []struct {
			name string
			sync bool
		}{{"synced-array", true}, {"map-unsynced", false}} {
			b.Run(fmt.Sprintf("prefill=%d/freelist=%s", size, fl.name), func(b *testing.B) {
				benchCommitLarge(b, size, fl.sync)
			})
		}
	}
}

// BenchmarkCommitRegistrationOperationIDs compares operation IDs that sort
// by creation time (provisioning.NewOperationID) with the random ones the
// broker used before, on a file that went through 50k registrations, with
// one committer and with 16 (whose commits share transactions): random
// keys dirty one leaf of the operations bucket per registration, ordered
// ones the rightmost leaf for all of a transaction's registrations.
func BenchmarkCommitRegistrationOperationIDs(b *testing.B) {
	for _, ids := range []struct {
		name string
		gen  func() (string, error)
	}{{"random", randomOperationID}, {"time", provisioning.NewOperationID}} {
		for _, conc := range []int{1, 16} {
			b.Run(fmt.Sprintf("opid=%s/conc=%d", ids.name, conc), func(b *testing.B) {
				benchCommit(b, 50_000, false, ids.gen, conc)
			})
		}
	}
}

// randomOperationID is the shape of the broker's operation IDs before they
// began with the creation time: 192 random bits.
func randomOperationID() (string, error) {
	return fmt.Sprintf("5.%016x.%016x%016x", rand.Uint64(), rand.Uint64(), rand.Uint64()), nil
}

func benchCommitLarge(b *testing.B, prefill int, syncFreelist bool) {
	benchCommit(b, prefill, syncFreelist, provisioning.NewOperationID, 1)
}

// BenchmarkCommitRegistrationLone is the commit a registration pays for
// when nothing shares its transaction (few devices in flight: the load
// generator's c=4), on a file after 50k registrations: a device's first
// registration (create) and a returning device's (update: the record
// replaced, its group index entry kept). cpu-µs/op is the process's CPU
// time per commit (user + system, the fsyncs' kernel work included),
// which on a busy node is what the commit takes from TLS handshakes.
//
// commit=journal is the store's default (journal.go: one write and one
// fdatasync, applied to bbolt 256 at a time, the applies included in the
// figures); commit=direct is the bbolt transaction of each registration.
func BenchmarkCommitRegistrationLone(b *testing.B) {
	for _, commit := range []string{"journal", "direct"} {
		for _, mode := range []string{"create", "update"} {
			b.Run("commit="+commit+"/registration="+mode, func(b *testing.B) {
				benchCommitMode(b, 50_000, false, provisioning.NewOperationID, 1, mode == "update", commit == "direct")
			})
		}
	}
}

// benchCommit commits registrations from conc goroutines (conc is a
// multiple of GOMAXPROCS) after prefill registrations whose operations
// were swept.
func benchCommit(b *testing.B, prefill int, syncFreelist bool, opID func() (string, error), conc int) {
	benchCommitMode(b, prefill, syncFreelist, opID, conc, false, true)
}

// benchCommitMode is benchCommit; with update, the measured commits
// register the prefilled devices again instead of new ones.
func benchCommitMode(b *testing.B, prefill int, syncFreelist bool, opID func() (string, error), conc int, update, noJournal bool) {
	measured := func(i int) *provisioning.RegistrationCommit {
		if update {
			return commitFor(i%prefill, "pre", time.Now().Add(time.Hour), opID)
		}
		return commitFor(i, "new", time.Now().Add(time.Hour), opID)
	}
	ctx := context.Background()
	path := filepath.Join(b.TempDir(), "bench.db")
	// Filled without the journal: loading is not what is measured.
	s, err := Open(path, Options{syncFreelist: syncFreelist, noJournal: true})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	now := time.Now()
	s.db.NoSync = true // loading is not what is measured
	for i := range prefill {
		// Expired at once: the sweep below deletes every operation.
		if _, _, err := s.CommitRegistration(ctx, commitFor(i, "pre", now.Add(-time.Hour), opID)); err != nil {
			b.Fatal(err)
		}
	}
	// The sweep runs as the broker's would, with its fsync: the slowest
	// of its transactions (sweepBatch deletes each) is how long
	// registrations wait behind it.
	s.db.NoSync = false
	var slowestSweep time.Duration
	for {
		t0 := time.Now()
		n, err := s.sweep(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if n == 0 {
			break
		}
		slowestSweep = max(slowestSweep, time.Since(t0))
	}
	if !noJournal {
		if err := s.Close(); err != nil {
			b.Fatal(err)
		}
		if s, err = Open(path, Options{syncFreelist: syncFreelist}); err != nil {
			b.Fatal(err)
		}
	}
	w0, tx0, cpu0 := wchar(b), s.db.Stats().TxStats, cpuTime(b)
	b.ReportAllocs()
	b.ResetTimer()
	if conc <= 1 {
		for i := 0; b.Loop(); i++ {
			if _, _, err := s.CommitRegistration(ctx, measured(i)); err != nil {
				b.Fatal(err)
			}
		}
	} else {
		var next atomic.Int64
		b.SetParallelism(max(conc/runtime.GOMAXPROCS(0), 1))
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				i := int(next.Add(1))
				if _, _, err := s.CommitRegistration(ctx, measured(i)); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	// What the journal still holds is part of the cost.
	if err := s.flushJournal(ctx); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	b.ReportMetric(float64(cpuTime(b)-cpu0)/float64(time.Microsecond)/float64(b.N), "cpu-µs/op")
	b.ReportMetric(float64(wchar(b)-w0)/float64(b.N), "written-B/op")
	st := s.db.Stats()
	// Dirty nodes written per commit (bbolt writes each node, overflow
	// pages included, in one write; the meta page is not counted).
	b.ReportMetric(float64(st.TxStats.GetWrite()-tx0.GetWrite())/float64(b.N), "writes/op")
	b.ReportMetric(float64(st.FreelistInuse), "freelist-B")
	b.ReportMetric(float64(slowestSweep.Microseconds())/1000, "sweep-ms")
}

// commitFor is a registration commit shaped like the broker's for an
// X.509 group device.
func commitFor(i int, prefix string, expires time.Time, newOpID func() (string, error)) *provisioning.RegistrationCommit {
	now := time.Now().UTC() // as wire.CertificateInfo gives it
	id := fmt.Sprintf("%s-device-%07d", prefix, i)
	info := &wire.X509CertificateInfo{
		SubjectName: "CN=" + id, IssuerName: "CN=bench device CA",
		SHA1Thumbprint:   "A94A8FE5CCB19BA61C4C0873D391E987982FBBD3",
		SHA256Thumbprint: "9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08",
		NotBeforeUTC:     now, NotAfterUTC: now.Add(365 * 24 * time.Hour),
		SerialNumber: fmt.Sprintf("%040X", i), Version: 3,
	}
	rec := &provisioning.RegistrationState{
		RegistrationID: id, DeviceID: id, AssignedHub: "hub-1.example", Status: provisioning.RegistrationAssigned,
		Substatus: "initialAssignment", AttestationType: provisioning.AttestationX509, EnrollmentGroupID: "bench-group",
		CertificateInfo: info, SigningCertInfo: info,
	}
	opID, err := newOpID()
	if err != nil {
		panic(err)
	}
	return &provisioning.RegistrationCommit{
		Record:    rec,
		Operation: &provisioning.Operation{OperationID: opID, RegistrationID: id, Status: provisioning.RegistrationAssigned, Created: now, Expires: expires},
		Event: &provisioning.Event{Type: provisioning.EventAssigned, Time: now, RegistrationID: id, DeviceID: id,
			AttestationType: provisioning.AttestationX509, EnrollmentGroupID: "bench-group", AssignedHub: "hub-1.example", OperationID: opID},
	}
}

// cpuTime is the CPU time (user + system) this process used so far.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// wchar is the bytes this process passed to write-like system calls so far.
func wchar(b *testing.B) int64 {
	data, err := os.ReadFile("/proc/self/io")
	if err != nil {
		b.Skipf("no /proc/self/io: %v", err)
	}
	for line := range strings.Lines(string(data)) {
		if v, ok := strings.CutPrefix(line, "wchar: "); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil {
				b.Fatal(err)
			}
			return n
		}
	}
	b.Fatal("no wchar in /proc/self/io")
	return 0
}
