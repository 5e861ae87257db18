package tpm_test

import (
	"context"
	"crypto"
	"crypto/x509"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"

	"github.com/dpsbroker/dpsbroker/clients/tpm"
	"github.com/dpsbroker/dpsbroker/clients/tpm/swtpmtest"
	"github.com/dpsbroker/dpsbroker/provisioning/sas"
	"github.com/dpsbroker/dpsbroker/provisioning/tpmattest"
)

// TestSWTPM runs the whole flow against swtpm, a second TPM implementation
// (libtpms) reached over TCP, and checks the EK certificate swtpm_setup
// wrote against the test's own local CA.
func TestSWTPM(t *testing.T) {
	sw := swtpmtest.Start(t, swtpmtest.Options{EKCertificates: true})
	// swtpm_setup persisted its RSA EK at 0x81010001; the Device uses it.
	d := sw.Device(t, tpm.Options{})
	ctx := context.Background()

	t.Run("challenge", func(t *testing.T) {
		ch := challenge(t, d.EndorsementKey(), d.StorageRootKey())
		if err := d.ActivateAndImport(ctx, ch.AuthenticationKey); err != nil {
			t.Fatalf("ActivateAndImport: %v", err)
		}
		now := time.Now()
		token, err := d.SignSAS(ctx, sas.Resource(idScope, d.RegistrationID()), now.Add(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		if err := tpmattest.VerifySAS(token, ch.Key, idScope, d.RegistrationID(), now); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("ek certificate", func(t *testing.T) {
		root, issuer := sw.LocalCA(t)
		roots, inter := x509.NewCertPool(), x509.NewCertPool()
		roots.AddCert(root)
		inter.AddCert(issuer)
		ek, err := tpmattest.ParseEK(d.EndorsementKey())
		if err != nil {
			t.Fatal(err)
		}
		ekPub, err := tpm2.Pub(*ek.Public)
		if err != nil {
			t.Fatal(err)
		}
		for _, tt := range []struct {
			name  string
			index tpm2.TPMHandle
		}{
			{"rsa", tpm.RSAEKCertIndex},
			{"ecc p-384", tpm.ECCP384EKCertIndex},
		} {
			t.Run(tt.name, func(t *testing.T) {
				cert, err := d.EKCertificate(ctx, tt.index)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := cert.Verify(x509.VerifyOptions{
					Roots:         roots,
					Intermediates: inter,
					KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
				}); err != nil {
					t.Fatalf("EK certificate does not verify against the local CA: %v", err)
				}
				if tt.index == tpm.RSAEKCertIndex {
					if eq, ok := cert.PublicKey.(interface{ Equal(crypto.PublicKey) bool }); !ok || !eq.Equal(ekPub) {
						t.Error("RSA EK certificate does not certify the EK the device sends")
					}
				}
			})
		}
	})
}
