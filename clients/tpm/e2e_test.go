package tpm_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2/transport"

	"github.com/dpsbroker/dpsbroker/clients/tpm"
	"github.com/dpsbroker/dpsbroker/clients/tpm/tpmsim"
	"github.com/dpsbroker/dpsbroker/provisioning/sas"
	"github.com/dpsbroker/dpsbroker/provisioning/tpmattest"
)

const idScope = "0ne00000A0A"

// openSim opens the process's one simulator; tests using it must not run
// in parallel.
func openSim(t *testing.T) transport.TPMCloser {
	t.Helper()
	sim, err := tpmsim.Open()
	if err != nil {
		t.Fatalf("open simulator: %v", err)
	}
	t.Cleanup(func() { sim.Close() })
	return sim
}

func newDevice(t *testing.T, tr transport.TPM, opts tpm.Options) *tpm.Device {
	t.Helper()
	d, err := tpm.New(context.Background(), tr, opts)
	if err != nil {
		t.Fatalf("tpm.New: %v", err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func TestEndToEnd(t *testing.T) {
	for _, tt := range []struct {
		name    string
		ek, srk tpm.KeyType
		persist bool
	}{
		{"rsa ek rsa srk", tpm.RSA, tpm.RSA, false},
		{"ecc ek ecc srk", tpm.ECC, tpm.ECC, false},
		{"rsa ek ecc srk", tpm.RSA, tpm.ECC, false},
		{"ecc ek rsa srk persisted", tpm.ECC, tpm.RSA, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			d := newDevice(t, openSim(t), tpm.Options{EKType: tt.ek, SRKType: tt.srk, Persist: tt.persist})
			regID := d.RegistrationID()

			ch, err := tpmattest.NewChallenge(nil, d.EndorsementKey(), d.StorageRootKey())
			if err != nil {
				t.Fatalf("NewChallenge: %v", err)
			}
			if err := d.ActivateAndImport(ctx, ch.AuthenticationKey); err != nil {
				t.Fatalf("ActivateAndImport: %v", err)
			}
			now := time.Now()
			token, err := d.SignSAS(ctx, sas.Resource(idScope, regID), now.Add(time.Hour))
			if err != nil {
				t.Fatalf("SignSAS: %v", err)
			}
			if err := tpmattest.VerifySAS(token, ch.Key, idScope, regID, now); err != nil {
				t.Fatalf("VerifySAS: %v", err)
			}
			if want := sas.Sign(ch.Key, sas.Resource(idScope, regID), now.Add(time.Hour), sas.DefaultKeyName, true); token != want {
				t.Errorf("token = %q, want what sas.Sign makes with K: %q", token, want)
			}
		})
	}
}
