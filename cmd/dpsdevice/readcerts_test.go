package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/dpsbroker/dpsbroker/provisioning/pkitest"
)

// TestReadCertificates covers the two forms --ek-cert and --ek-chain take:
// PEM (any number of certificates, other blocks ignored) and one DER
// certificate as read from a TPM's NV index.
func TestReadCertificates(t *testing.T) {
	root := pkitest.NewRoot(t)
	leaf := root.Intermediate(t, "ek-ca").Leaf(t, "ek")
	keyPEM, err := pkitest.KeyPEM(leaf.Key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name string
		path string
		want int // certificates; 0 = an error
	}{
		{"pem chain", write("chain.pem", leaf.ChainPEM()), 2},
		{"pem with a key block", write("both.pem", append(keyPEM, leaf.CertPEM()...)), 1},
		{"der", write("ek.der", leaf.Cert.Raw), 1},
		{"garbage", write("garbage", []byte("not a certificate")), 0},
		{"bad pem certificate", write("bad.pem", []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")), 0},
		{"missing file", filepath.Join(dir, "missing"), 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			certs, err := readCertificates(tt.path)
			if tt.want == 0 {
				if err == nil {
					t.Fatalf("got %d certificates, want an error", len(certs))
				}
				return
			}
			if err != nil || len(certs) != tt.want {
				t.Fatalf("got %d certificates, %v; want %d", len(certs), err, tt.want)
			}
			if !certs[0].Equal(leaf.Cert) {
				t.Fatal("first certificate is not the leaf")
			}
		})
	}
}
