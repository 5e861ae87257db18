package hooks_test

import (
	"context"
	"encoding/pem"
	"testing"
	"time"

	dpsdevice "github.com/dpsbroker/dpsbroker/clients/device"
	"github.com/dpsbroker/dpsbroker/clients/tpm"
	"github.com/dpsbroker/dpsbroker/clients/tpm/swtpmtest"
	"github.com/dpsbroker/dpsbroker/provisioning"
)

// TestTPMSWTPM provisions swtpm (libtpms, a second TPM implementation)
// through the TCP transport: once by its individual enrollment, once by
// the EK certificate swtpm_setup made, under a TPM enrollment group keyed
// by the root of swtpm_setup's (test-private) local CA.
func TestTPMSWTPM(t *testing.T) {
	sw := swtpmtest.Start(t, swtpmtest.Options{EKCertificates: true})
	d := sw.Device(t, tpm.Options{}) // the RSA EK swtpm_setup persisted
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	t.Run("individual", func(t *testing.T) {
		e := newEnv(t, fastPolls)
		e.enrollTPM(d.RegistrationID(), d.EndorsementKey(), provisioning.StatusEnabled)
		res, err := dpsdevice.Provision(ctx, e.deviceConfig(d))
		checkTPMAssigned(t, res, err, d.RegistrationID())
	})

	t.Run("group by the EK certificate's CA", func(t *testing.T) {
		e := newEnv(t, fastPolls)
		root, issuer := sw.LocalCA(t)
		e.putTPMGroup("swtpm-fleet", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: root.Raw})), provisioning.StatusEnabled)
		ekCert, err := d.EKCertificate(ctx, tpm.RSAEKCertIndex)
		if err != nil {
			t.Fatal(err)
		}
		cfg := e.deviceConfig(d)
		cfg.EKCertificate = ekCert.Raw
		cfg.EKCertificateChain = [][]byte{issuer.Raw}
		res, err := dpsdevice.Provision(ctx, cfg)
		checkTPMAssigned(t, res, err, d.RegistrationID())
		rec, err := e.store.GetRegistration(ctx, d.RegistrationID())
		if err != nil || rec.EnrollmentGroupID != "swtpm-fleet" {
			t.Fatalf("record %+v %v", rec, err)
		}
		// Without the certificate there is no way in.
		cfg.EKCertificate, cfg.EKCertificateChain = nil, nil
		if _, err := dpsdevice.Provision(ctx, cfg); dpsdevice.ErrorCode(err) != 401002 {
			t.Fatalf("without EK certificate: %v", err)
		}
	})
}
