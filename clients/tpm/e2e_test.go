package tpm_test

import (
	"context"
	"encoding/base64"
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

			// Server, first leg: the register request carries EK and SRK
			// (base64); the pending challenge goes to the store.
			ekB64 := base64.StdEncoding.EncodeToString(d.EndorsementKey())
			srkB64 := base64.StdEncoding.EncodeToString(d.StorageRootKey())
			ek, err := tpmattest.ParseEKBase64(ekB64)
			if err != nil {
				t.Fatal(err)
			}
			if !ek.Matches(ekB64) || ek.RegistrationID() != regID {
				t.Fatal("server and device disagree on the EK")
			}
			srk, err := tpmattest.ParseSRKBase64(srkB64)
			if err != nil {
				t.Fatal(err)
			}
			ch, err := tpmattest.NewKeyChallenge(nil, ek, srk)
			if err != nil {
				t.Fatalf("NewKeyChallenge: %v", err)
			}
			now := time.Now()
			store := map[string][]byte{
				tpmattest.ChallengeKey(regID, ek.Digest): ch.Pending(regID, now, 0).Marshal(),
			}

			// Device.
			if err := d.ActivateAndImport(ctx, ch.AuthenticationKey); err != nil {
				t.Fatalf("ActivateAndImport: %v", err)
			}
			token, err := d.SignSAS(ctx, sas.Resource(idScope, regID), now.Add(time.Hour))
			if err != nil {
				t.Fatalf("SignSAS: %v", err)
			}

			// Server, second leg: same keys plus the SAS.
			p, err := tpmattest.UnmarshalPendingChallenge(store[tpmattest.ChallengeKey(regID, ek.Digest)])
			if err != nil {
				t.Fatal(err)
			}
			if err := p.Check(regID, ek, srk, now.Add(time.Second)); err != nil {
				t.Fatalf("Check: %v", err)
			}
			if err := p.VerifySAS(token, idScope, now.Add(time.Second)); err != nil {
				t.Fatalf("VerifySAS: %v", err)
			}
			if want := sas.Sign(ch.Key, sas.Resource(idScope, regID), now.Add(time.Hour), sas.DefaultKeyName, true); token != want {
				t.Errorf("token = %q, want what sas.Sign makes with K: %q", token, want)
			}
		})
	}
}
