package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"math/big"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dpsbroker/dpsbroker/provisioning"
)

// enrollmentPutter is what seeding needs of a store: both the embedded and
// the Redis store have it.
type enrollmentPutter interface {
	PutEnrollment(ctx context.Context, e *provisioning.IndividualEnrollment, ifMatch string) (*provisioning.IndividualEnrollment, error)
}

// fleetMinter issues the certificates of the fake fleet: every one is a
// real, distinct X.509 leaf (its own serial, CN = registration ID, a valid
// ECDSA P-256 signature by one throwaway CA), but all share one device
// key, because no fake device ever connects and key generation would
// dominate the seeding time. To sign a million leaves in seconds rather
// than minutes, the minter builds one to-be-signed template with
// x509.CreateCertificate and, per leaf, patches the fixed-width serial and
// CN in place and signs the result (one ECDSA signature, no re-encoding and
// no verification). The broker compares an individual enrollment's
// certificate by thumbprint only; what matters for the lookup is that
// each entry is distinct and real-sized.
type fleetMinter struct {
	ca     *x509.Certificate
	caKey  *ecdsa.PrivateKey
	prefix string
	tbs    []byte // template TBSCertificate
	serial int    // offset of the 7 patchable serial bytes in tbs
	cn     int    // offset of the CN in tbs
	sigAlg pkix.AlgorithmIdentifier
}

// templateSerial is 8 bytes with the top bit clear, so that every patched
// serial stays positive and of the same encoded length.
const templateSerial = 0x0100000000000000

func newFleetMinter(prefix string) (*fleetMinter, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	devKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now().Add(-time.Hour)
	caTpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "dpsbench fleet CA"},
		NotBefore:             now,
		NotAfter:              now.Add(365 * 24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTpl, caTpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}
	cn0 := fleetID(prefix, 0)
	tpl := &x509.Certificate{
		SerialNumber: big.NewInt(templateSerial),
		Subject:      pkix.Name{CommonName: cn0},
		NotBefore:    now,
		NotAfter:     now.Add(365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tpl, ca, &devKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	var outer struct {
		TBS    asn1.RawValue
		SigAlg pkix.AlgorithmIdentifier
		Sig    asn1.BitString
	}
	if _, err := asn1.Unmarshal(der, &outer); err != nil {
		return nil, err
	}
	tbs := leaf.RawTBSCertificate
	serialTLV := []byte{0x02, 0x08, 0x01, 0, 0, 0, 0, 0, 0, 0}
	si := bytes.Index(tbs, serialTLV)
	ci := bytes.Index(tbs, []byte(cn0))
	if si < 0 || ci < 0 || bytes.Count(tbs, []byte(cn0)) != 1 {
		return nil, errors.New("seed: cannot locate serial and CN in the template certificate")
	}
	return &fleetMinter{ca: ca, caKey: caKey, prefix: prefix, tbs: tbs, serial: si + 3, cn: ci, sigAlg: outer.SigAlg}, nil
}

// leaf issues the DER certificate of fake device i (i < 10,000,000).
func (m *fleetMinter) leaf(i int) ([]byte, error) {
	tbs := bytes.Clone(m.tbs)
	v := uint64(i) + 1
	for k := 6; k >= 0; k-- {
		tbs[m.serial+k] = byte(v)
		v >>= 8
	}
	copy(tbs[m.cn:], fleetID(m.prefix, i))
	sum := sha256.Sum256(tbs)
	sig, err := ecdsa.SignASN1(rand.Reader, m.caKey, sum[:])
	if err != nil {
		return nil, err
	}
	return asn1.Marshal(struct {
		TBS    asn1.RawValue
		SigAlg pkix.AlgorithmIdentifier
		Sig    asn1.BitString
	}{asn1.RawValue{FullBytes: tbs}, m.sigAlg, asn1.BitString{Bytes: sig, BitLength: 8 * len(sig)}})
}

// fleetID is the registration ID of fake device i.
func fleetID(prefix string, i int) string { return fmt.Sprintf("%s%07d", prefix, i) }

// seedFleet writes n enabled X.509 individual enrollments named prefix +
// a zero-padded index into st, with enough writers in flight for the
// embedded store's group commit to fill its transactions. It returns how
// long it took.
func seedFleet(ctx context.Context, st enrollmentPutter, prefix string, n int, progress io.Writer) (time.Duration, error) {
	start := time.Now()
	if n > 9_999_999 {
		return 0, errors.New("seed: at most 9,999,999 enrollments")
	}
	m, err := newFleetMinter(prefix)
	if err != nil {
		return 0, fmt.Errorf("seed: %w", err)
	}
	const writers = 512
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	ids := make(chan int, 1024)
	ready := make(chan *provisioning.IndividualEnrollment, writers)
	var minters, putters sync.WaitGroup
	for range runtime.GOMAXPROCS(0) {
		minters.Go(func() {
			for i := range ids {
				id := fleetID(prefix, i)
				der, err := m.leaf(i)
				if err != nil {
					cancel(fmt.Errorf("seed: mint %s: %w", id, err))
					return
				}
				e := &provisioning.IndividualEnrollment{
					RegistrationID: id,
					Attestation: provisioning.AttestationMechanism{
						Type: provisioning.AttestationX509,
						X509: &provisioning.X509Attestation{ClientCertificates: &provisioning.X509Certificates{
							Primary: &provisioning.X509CertificateWithInfo{Certificate: base64.StdEncoding.EncodeToString(der)},
						}},
					},
					EnrollmentPolicy: provisioning.EnrollmentPolicy{ProvisioningStatus: provisioning.StatusEnabled},
				}
				select {
				case ready <- e:
				case <-ctx.Done():
					return
				}
			}
		})
	}
	var done atomic.Int64
	for range writers {
		putters.Go(func() {
			for e := range ready {
				if _, err := st.PutEnrollment(ctx, e, ""); err != nil {
					cancel(fmt.Errorf("seed: put %s: %w", e.RegistrationID, err))
					return
				}
				done.Add(1)
			}
		})
	}
	stopProgress := make(chan struct{})
	var pw sync.WaitGroup
	if progress != nil {
		pw.Go(func() {
			t := time.NewTicker(10 * time.Second)
			defer t.Stop()
			for {
				select {
				case <-stopProgress:
					return
				case <-t.C:
					d := done.Load()
					fmt.Fprintf(progress, "dpsbench: seeded %d of %d (%.0f/s)\n", d, n, float64(d)/time.Since(start).Seconds())
				}
			}
		})
	}
feed:
	for i := range n {
		select {
		case ids <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(ids)
	minters.Wait()
	close(ready)
	putters.Wait()
	close(stopProgress)
	pw.Wait()
	if err := context.Cause(ctx); err != nil {
		return 0, err
	}
	if got := done.Load(); got != int64(n) {
		return 0, errors.New("seed: not every enrollment was written")
	}
	return time.Since(start), nil
}
