package main

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"path/filepath"
	"testing"

	"github.com/dpsbroker/dpsbroker/provisioning/store/bolt"
)

// TestSeedBolt: every fake enrollment is stored, enabled, and holds a
// distinct certificate whose CN is its registration ID.
func TestSeedBolt(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dpsbroker.db")
	const n = 1500
	if _, err := seedBolt(context.Background(), path, "fleet-", n, nil); err != nil {
		t.Fatal(err)
	}
	st, err := bolt.Open(path, bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = st.Close() }()
	seen := map[[32]byte]bool{}
	for _, i := range []int{0, 1, 777, n - 1} {
		id := fleetID("fleet-", i)
		e, err := st.GetEnrollment(context.Background(), id)
		if err != nil {
			t.Fatalf("%s: %v", id, err)
		}
		if !e.Enabled() {
			t.Errorf("%s: not enabled", id)
		}
		der, err := base64.StdEncoding.DecodeString(e.Attestation.X509.ClientCertificates.Primary.Certificate)
		if err != nil {
			t.Fatal(err)
		}
		c, err := x509.ParseCertificate(der)
		if err != nil || c.Subject.CommonName != id {
			t.Errorf("%s: certificate %v, CN %q", id, err, c.Subject.CommonName)
		}
		seen[sha256.Sum256(der)] = true
	}
	if len(seen) != 4 {
		t.Errorf("certificates are not distinct: %d of 4", len(seen))
	}
	if _, err := st.GetEnrollment(context.Background(), fleetID("fleet-", n)); err == nil {
		t.Error("one enrollment too many")
	}
}

// TestFleetMinter: patched leaves are valid certificates signed by the
// fleet CA, with their own CN and serial.
func TestFleetMinter(t *testing.T) {
	m, err := newFleetMinter("fleet-")
	if err != nil {
		t.Fatal(err)
	}
	serials := map[string]bool{}
	for _, i := range []int{0, 1, 255, 256, 999_999, 9_999_999} {
		der, err := m.leaf(i)
		if err != nil {
			t.Fatal(err)
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatalf("leaf %d: %v", i, err)
		}
		if c.Subject.CommonName != fleetID("fleet-", i) {
			t.Errorf("leaf %d: CN %q", i, c.Subject.CommonName)
		}
		if err := c.CheckSignatureFrom(m.ca); err != nil {
			t.Errorf("leaf %d: signature: %v", i, err)
		}
		if c.SerialNumber.Sign() <= 0 || serials[c.SerialNumber.String()] {
			t.Errorf("leaf %d: serial %v not positive or reused", i, c.SerialNumber)
		}
		serials[c.SerialNumber.String()] = true
	}
}

func BenchmarkFleetLeaf(b *testing.B) {
	m, err := newFleetMinter("fleet-")
	if err != nil {
		b.Fatal(err)
	}
	for i := 0; b.Loop(); i++ {
		if _, err := m.leaf(i % 9_999_999); err != nil {
			b.Fatal(err)
		}
	}
}
