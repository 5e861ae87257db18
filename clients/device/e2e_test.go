package device_test

import (
	"errors"
	"testing"

	"github.com/dpsbroker/dpsbroker/broker/brokertest"
	"github.com/dpsbroker/dpsbroker/clients/device"
	"github.com/dpsbroker/dpsbroker/provisioning/pkitest"
	"github.com/dpsbroker/dpsbroker/provisioning/wire"
)

// End to end: the client against the real broker (hooks, store, X.509
// decision) started by brokertest.

func e2eConfig(t *testing.T, b *brokertest.Broker, dev *pkitest.Leaf) device.Config {
	t.Helper()
	tc, err := device.X509Identity(dev.Chain, dev.Key)
	if err != nil {
		t.Fatal(err)
	}
	return device.Config{
		Broker:      b.MQTTAddr(),
		IDScope:     b.IDScope(),
		Certificate: &tc,
		TLSConfig:   b.TLSConfigFor(nil),
		Logger:      testLogger(t),
	}
}

func TestE2EProvisionGroupDevice(t *testing.T) {
	t.Parallel()
	b := brokertest.New(t)
	factory := b.EnrollGroup(t, "factory-a")
	dev := b.MintDevice(t, factory, "e2e-device-1")

	res, err := device.Provision(testContext(t), e2eConfig(t, b, dev))
	if err != nil {
		t.Fatalf("Provision: %v", err)
	}
	if res.Status != wire.StatusAssigned || res.RegistrationID != "e2e-device-1" || res.DeviceID != "e2e-device-1" ||
		res.AssignedHub != "hub-1.example.net" {
		t.Errorf("result = %+v", res)
	}
	if res.X509 == nil || res.X509.EnrollmentGroupID != "factory-a" || res.X509.CertificateInfo == nil ||
		res.X509.CertificateInfo.SHA256Thumbprint != wire.CertificateInfo(dev.Cert).SHA256Thumbprint {
		t.Errorf("x509 = %+v", res.X509)
	}

	// A second run of the same device provisions again on a new connection.
	again, err := device.Provision(testContext(t), e2eConfig(t, b, dev))
	if err != nil || again.Status != wire.StatusAssigned {
		t.Fatalf("second Provision: %+v, %v", again, err)
	}
}

// Refused devices get the typed CONNACK error with the DPS error code.
func TestE2ERefused(t *testing.T) {
	t.Parallel()
	b := brokertest.New(t)
	enabled := b.EnrollGroup(t, "enabled")
	disabled := b.EnrollGroup(t, "disabled", brokertest.GroupDisabled())
	deviceOff := b.MintDevice(t, enabled, "e2e-device-off")
	b.DisableDevice(t, deviceOff)

	tests := []struct {
		name string
		dev  *pkitest.Leaf
	}{
		{"group disabled", b.MintDevice(t, disabled, "e2e-disabled-group")},
		{"device disabled over its enabled group", deviceOff},
		{"unknown CA", pkitest.NewRoot(t).Leaf(t, "e2e-stranger")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := device.Provision(testContext(t), e2eConfig(t, b, tt.dev))
			var ce *device.ConnectError
			if !errors.As(err, &ce) {
				t.Fatalf("err = %v (%T), want *device.ConnectError", err, err)
			}
			if ce.ReasonCode != 0x87 || ce.ErrorCode()/1000 != 401 {
				t.Errorf("refusal %#v: want 0x87 with a 401xxx code in the reason", ce)
			}
			t.Logf("refused as expected: %v", err)
		})
	}
}
