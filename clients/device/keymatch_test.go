package device_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dpsbroker/dpsbroker/clients/device"
	"github.com/dpsbroker/dpsbroker/provisioning/pkitest"
)

func TestLoadX509IdentityWithKey(t *testing.T) {
	ca := pkitest.NewRoot(t).Intermediate(t, "factory")
	dev := ca.Leaf(t, "dev-1")
	other := ca.Leaf(t, "dev-2")
	dir := t.TempDir()
	write := fileWriter(t, dir)
	chain := write("chain.pem", dev.ChainPEM())
	// The intermediate first: the leaf is found by its key, not its place.
	reordered := write("reordered.pem", pkitest.CertPEM(ca.Cert, dev.Cert))

	for _, file := range []string{chain, reordered} {
		tc, err := device.LoadX509IdentityWithKey(file, opaqueSigner{dev.Key})
		if err != nil {
			t.Fatalf("%s: %v", filepath.Base(file), err)
		}
		if tc.Leaf.Subject.CommonName != "dev-1" || len(tc.Certificate) != 2 {
			t.Errorf("%s: leaf %q, %d certificates", filepath.Base(file), tc.Leaf.Subject.CommonName, len(tc.Certificate))
		}
	}

	_, err := device.LoadX509IdentityWithKey(chain, opaqueSigner{other.Key})
	if !errors.Is(err, device.ErrKeyMismatch) {
		t.Fatalf("another device's key: %v, want ErrKeyMismatch", err)
	}
	for _, want := range []string{device.KeyFingerprint(other.Key.Public()), device.KeyFingerprint(dev.Cert.PublicKey), `"dev-1"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}

	for _, tt := range []struct {
		name, file string
		want       string
	}{
		{"missing file", filepath.Join(dir, "nope.pem"), "read certificate"},
		{"no certificate", write("empty.pem", []byte("nothing")), "no PEM CERTIFICATE"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := device.LoadX509IdentityWithKey(tt.file, dev.Key); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want %q", err, tt.want)
			}
		})
	}
	if _, err := device.LoadX509IdentityWithKey(chain, nil); err == nil {
		t.Error("nil key: no error")
	}
}

// fileWriter returns a function that writes a file into dir and returns
// its path, failing t when it cannot.
func fileWriter(t *testing.T, dir string) func(name string, data []byte) string {
	return func(name string, data []byte) string {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
}
