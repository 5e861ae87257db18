package storetest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"math/big"
	"testing"
	"time"

	"github.com/dpsbroker/dpsbroker/provisioning"
)

// Certificate is a self-signed CA certificate made for one test, in the
// encodings a store must accept in certificate fields.
type Certificate struct {
	Cert *x509.Certificate
	DER  []byte
	// PEM is the "-----BEGIN CERTIFICATE-----" form.
	PEM string
	// Base64 is standard base64 of DER without PEM armour, the other form
	// the DPS service API accepts.
	Base64 string
	// SHA256 is the thumbprint GroupsByCertificate is queried with.
	SHA256 [32]byte
}

// NewCACertificate makes a self-signed ECDSA P-256 CA certificate. It is
// deliberately tiny: stores only hash and parse certificates, and the full
// test PKI lives elsewhere.
func NewCACertificate(tb testing.TB, commonName string) *Certificate {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatalf("generate key: %v", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		tb.Fatalf("serial: %v", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: commonName},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		tb.Fatalf("create certificate: %v", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatalf("parse certificate: %v", err)
	}
	return &Certificate{
		Cert:   cert,
		DER:    der,
		PEM:    string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		Base64: base64.StdEncoding.EncodeToString(der),
		SHA256: sha256.Sum256(der),
	}
}

// WaitChange reads ch until it delivers want, skipping other changes
// (including ChangeAll), and fails the test if want does not arrive within
// timeout. Change feeds may be asynchronous (Redis pub/sub), so tests wait
// instead of asserting on the next value.
func WaitChange(tb testing.TB, ch <-chan provisioning.Change, want provisioning.Change, timeout time.Duration) {
	tb.Helper()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	var seen []provisioning.Change
	for {
		select {
		case c, ok := <-ch:
			if !ok {
				tb.Fatalf("change channel closed while waiting for %+v (seen %v)", want, seen)
			}
			if c == want {
				return
			}
			seen = append(seen, c)
		case <-timer.C:
			tb.Fatalf("no change %+v within %v (seen %v)", want, timeout, seen)
		}
	}
}

// Eventually calls cond until it returns true or timeout passes. Tests use
// it to wait for expiry without asserting how long expiry takes.
func Eventually(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("%s: not reached within %v", what, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// ctxT is a per-test context with a generous deadline, so that a hung store
// fails the test rather than the whole run.
func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// CertificateField is a certificate field text and whether a store must
// accept (and index) it.
type CertificateField struct {
	Name string
	Text string
	OK   bool
}

// CertificateFields lists the spellings of c a store must accept in a
// certificate field (PEM, base64 DER, wrapped base64) and the texts it must
// refuse: the rule of provisioning.ParseCertificate, so that no entry is
// indexed that the evaluator could never match.
func CertificateFields(c *Certificate) []CertificateField {
	return []CertificateField{
		{"pem", c.PEM, true},
		{"base64 der", c.Base64, true},
		{"base64 der wrapped", c.Base64[:40] + "\n" + c.Base64[40:], true},
		{"empty", "", false},
		{"two pem blocks", c.PEM + c.PEM, false},
		{"text after the pem block", c.PEM + "trailing", false},
		{"garbage", "not a certificate", false},
	}
}
