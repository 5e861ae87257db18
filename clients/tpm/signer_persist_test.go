package tpm_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/sha256"
	"errors"
	"testing"

	"github.com/google/go-tpm/tpm2"

	"github.com/dpsbroker/dpsbroker/clients/tpm"
)

// TestPersistSigner: a signing key persisted at a handle is found again by
// a new Device on the same TPM (a restarted device) and signs there; the
// handle is never silently overwritten.
func TestPersistSigner(t *testing.T) {
	ctx := context.Background()
	const h tpm2.TPMHandle = 0x81000002
	sim := openSim(t)
	d1, err := tpm.New(ctx, sim, tpm.Options{EKType: tpm.ECC, SRKType: tpm.ECC})
	if err != nil {
		t.Fatal(err)
	}
	s1, err := d1.NewSigner(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := d1.PersistSigner(ctx, s1, h); err != nil {
		t.Fatalf("PersistSigner: %v", err)
	}
	if got, ok := s1.Handle(); !ok || got != h {
		t.Errorf("Handle() = %#x, %v", uint32(got), ok)
	}
	verifySigns(t, s1)
	other, err := d1.NewSigner(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := d1.PersistSigner(ctx, other, h); !errors.Is(err, tpm.ErrHandleInUse) {
		t.Errorf("PersistSigner on an occupied handle: %v, want ErrHandleInUse", err)
	}
	d1.Close()

	d2 := newDevice(t, sim, tpm.Options{EKType: tpm.ECC, SRKType: tpm.RSA})
	s2, err := d2.PersistentSigner(ctx, h)
	if err != nil {
		t.Fatalf("PersistentSigner: %v", err)
	}
	if !s2.Public().(*ecdsa.PublicKey).Equal(s1.Public()) {
		t.Fatal("the persisted key has another public key")
	}
	verifySigns(t, s2)

	for _, tt := range []struct {
		name string
		h    tpm2.TPMHandle
	}{
		{"empty handle", 0x81000003},
		{"not persistent", 0x80000001},
		{"platform range", 0x81800000},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := d2.PersistentSigner(ctx, tt.h); err == nil {
				t.Error("PersistentSigner: no error")
			}
			s, err := d2.NewSigner(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if tt.h != 0x81000003 {
				if err := d2.PersistSigner(ctx, s, tt.h); err == nil {
					t.Error("PersistSigner: no error")
				}
			}
		})
	}
}

// TestPersistentSignerRefusesOtherKeys: a persisted key that is not an
// unrestricted TPM-generated signing key (here the SRK) is refused.
func TestPersistentSignerRefusesOtherKeys(t *testing.T) {
	d := newDevice(t, openSim(t), tpm.Options{EKType: tpm.ECC, SRKType: tpm.ECC, Persist: true})
	if _, err := d.PersistentSigner(context.Background(), tpm.SRKHandle); err == nil {
		t.Error("the SRK was accepted as a signing key")
	}
}

func verifySigns(t *testing.T, s *tpm.Signer) {
	t.Helper()
	digest := sha256.Sum256([]byte("persisted"))
	sig, err := s.Sign(nil, digest[:], crypto.SHA256)
	if err != nil {
		t.Fatalf("Sign: %v", err)
	}
	if !ecdsa.VerifyASN1(s.Public().(*ecdsa.PublicKey), digest[:], sig) {
		t.Error("signature does not verify")
	}
}
