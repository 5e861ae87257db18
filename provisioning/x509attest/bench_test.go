package x509attest_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"fmt"
	"testing"
	"time"

	"github.com/dpsbroker/dpsbroker/provisioning/pkitest"
	"github.com/dpsbroker/dpsbroker/provisioning/x509attest"
)

// BenchmarkDecideX509 measures decisions against one ECDSA P-256 signature
// verification (ecdsa.VerifyASN1 on a precomputed digest) in the same run:
//
//	go test -run x -bench DecideX509 -benchtime 2s -count 3 ./provisioning/x509attest/
//
// "x-verify" is the decision's cost in verifications. The machine may be
// shared, so it is computed from process CPU time (getrusage, where
// available) and against reference verifications interleaved with the
// measured decisions (a few every batch, outside the timer): both sides of
// the ratio then run on the same CPU at the same moment. "cpu-ns/op" is the
// CPU time per decision; ns/op is the usual wall time.
func BenchmarkDecideX509(b *testing.B) {
	probe := newVerifyProbe()
	b.Run("verify-p256-baseline", func(b *testing.B) {
		b.ReportAllocs()
		var m meter
		b.ResetTimer()
		m.start()
		for range b.N {
			probe.verify(b)
		}
		m.stop()
		b.StopTimer()
		b.ReportMetric(m.perOp(b.N), "cpu-ns/op")
	})

	root := pkitest.NewRoot(b)
	a := root.Intermediate(b, "A")
	a2 := a.Intermediate(b, "A2")
	store := newFake().putGroup(x509Group("root", root.Cert, true))
	// Certificates are made in batches outside the timer, with shared keys,
	// so a batch costs only signatures.
	leafKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	interKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)

	b.Run("warm-intermediates-new-leaf", func(b *testing.B) {
		// leaf -> A2 -> A -> root (enrolled); the links above the leaf are
		// verified already, the leaf is new every time.
		e := x509attest.New(store, x509attest.Options{})
		mustProvision(b, e, a2.Leaf(b, "warmup").Chain)
		measure(b, e, probe, func(start, n int) [][]*x509.Certificate {
			chains := make([][]*x509.Certificate, n)
			for j := range chains {
				chains[j] = a2.Leaf(b, fmt.Sprintf("device-%d", start+j), pkitest.WithSigner(leafKey)).Chain
			}
			return chains
		})
	})

	b.Run("repeat-leaf", func(b *testing.B) {
		e := x509attest.New(store, x509attest.Options{})
		chain := a2.Leaf(b, "device-1").Chain
		mustProvision(b, e, chain)
		measure(b, e, probe, func(_, n int) [][]*x509.Certificate {
			chains := make([][]*x509.Certificate, n)
			for j := range chains {
				chains[j] = chain
			}
			return chains
		})
	})

	b.Run("cold-chain", func(b *testing.B) {
		// leaf -> new intermediate -> root (enrolled): two signatures to
		// verify, nothing cached.
		e := x509attest.New(store, x509attest.Options{})
		measure(b, e, probe, func(start, n int) [][]*x509.Certificate {
			chains := make([][]*x509.Certificate, n)
			for j := range chains {
				inter := root.Intermediate(b, fmt.Sprintf("line-%d", start+j), pkitest.WithSigner(interKey))
				chains[j] = inter.Leaf(b, "device-1", pkitest.WithSigner(leafKey)).Chain
			}
			return chains
		})
	})
}

const (
	benchBatch = 256 // decisions between two pauses of the timer
	probeBatch = 32  // reference verifications per pause
)

// measure runs b.N decisions over chains from next (called with the index
// of the first decision and the batch size) and reports the metrics.
func measure(b *testing.B, e *x509attest.Evaluator, probe *verifyProbe, next func(start, n int) [][]*x509.Certificate) {
	var work, ref meter
	refOps := 0
	var chains [][]*x509.Certificate
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if i%benchBatch == 0 {
			work.stop()
			b.StopTimer()
			chains = next(i, benchBatch)
			ref.start()
			for range probeBatch {
				probe.verify(b)
			}
			ref.stop()
			refOps += probeBatch
			b.StartTimer()
			work.start()
		}
		mustProvision(b, e, chains[i%benchBatch])
	}
	work.stop()
	b.StopTimer()
	per := work.perOp(b.N)
	b.ReportMetric(per, "cpu-ns/op")
	if r := ref.perOp(refOps); r > 0 {
		b.ReportMetric(per/r, "x-verify")
	}
}

func mustProvision(b *testing.B, e *x509attest.Evaluator, chain []*x509.Certificate) {
	d, err := e.Decide(context.Background(), chain)
	if err != nil || d.Outcome != x509attest.Provision {
		b.Fatalf("%v %v", err, d.Explanation)
	}
}

// verifyProbe is the unit of cost: one ECDSA P-256 verification.
type verifyProbe struct {
	pub    *ecdsa.PublicKey
	digest [32]byte
	sig    []byte
}

func newVerifyProbe() *verifyProbe {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p := &verifyProbe{pub: &key.PublicKey, digest: sha256.Sum256([]byte("baseline"))}
	p.sig, _ = ecdsa.SignASN1(rand.Reader, key, p.digest[:])
	return p
}

func (p *verifyProbe) verify(b *testing.B) {
	if !ecdsa.VerifyASN1(p.pub, p.digest[:], p.sig) {
		b.Fatal("reference verification failed")
	}
}

// meter accumulates the process CPU time of the measured stretches, or
// wall time where CPU time is unavailable.
type meter struct {
	cpuAt   time.Duration
	wallAt  time.Time
	total   time.Duration
	running bool
}

func (m *meter) start() {
	m.cpuAt, _ = processCPU()
	m.wallAt = time.Now()
	m.running = true
}

func (m *meter) stop() {
	if !m.running {
		return
	}
	m.running = false
	if now, ok := processCPU(); ok {
		m.total += now - m.cpuAt
		return
	}
	m.total += time.Since(m.wallAt)
}

func (m *meter) perOp(n int) float64 {
	if n == 0 {
		return 0
	}
	return float64(m.total.Nanoseconds()) / float64(n)
}
