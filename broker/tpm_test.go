package broker_test

import (
	"context"
	"testing"
	"time"

	"github.com/dpsbroker/dpsbroker/broker"
	"github.com/dpsbroker/dpsbroker/broker/brokertest"
	"github.com/dpsbroker/dpsbroker/clients/device"
	"github.com/dpsbroker/dpsbroker/clients/tpm"
	"github.com/dpsbroker/dpsbroker/clients/tpm/tpmsim"
	"github.com/dpsbroker/dpsbroker/provisioning/wire"
)

// TestTPMDeviceThroughBroker checks that the assembled broker wires TPM
// attestation: a simulated TPM whose EK is enrolled provisions over MQTT
// (challenge, SAS answer, poll), on the default flow and with the fast path,
// and a disabled enrollment is refused with the DPS code.
func TestTPMDeviceThroughBroker(t *testing.T) {
	for _, fast := range []bool{false, true} {
		name := map[bool]string{false: "default", true: "fast-path"}[fast]
		t.Run(name, func(t *testing.T) {
			b := brokertest.New(t, brokertest.WithConfig(func(c *broker.Config) {
				c.RetryAfter = time.Second
				c.FastPath = fast
			}))
			tr, err := tpmsim.OpenWithSeed(42)
			if err != nil {
				t.Fatal(err)
			}
			defer tr.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			d, err := tpm.New(ctx, tr, tpm.Options{EKType: tpm.ECC, SRKType: tpm.ECC})
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()

			cfg := device.Config{
				Broker:    b.MQTTAddr(),
				IDScope:   b.IDScope(),
				TLSConfig: b.TLSConfigFor(nil),
				TPM:       d,
			}

			regID := b.EnrollTPM(t, "", d.EndorsementKey(), false)
			_, err = device.Provision(ctx, cfg)
			if code := device.ErrorCode(err); code != wire.ErrorCodeInvalidCertificate {
				t.Fatalf("disabled TPM enrollment: err %v (code %d), want DPS code %d", err, code, wire.ErrorCodeInvalidCertificate)
			}

			b.EnrollTPM(t, regID, d.EndorsementKey(), true)
			res, err := device.Provision(ctx, cfg)
			if err != nil {
				t.Fatalf("Provision: %v", err)
			}
			if res.Status != wire.StatusAssigned || res.RegistrationID != regID || res.AssignedHub == "" {
				t.Fatalf("result %+v", res)
			}
			if res.TPM == nil || res.TPM.AuthenticationKey == "" {
				t.Fatal("assigned without registrationState.tpm.authenticationKey")
			}
		})
	}
}
