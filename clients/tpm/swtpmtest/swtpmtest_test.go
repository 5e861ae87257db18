package swtpmtest_test

import (
	"context"
	"testing"

	"github.com/dpsbroker/dpsbroker/clients/tpm"
	"github.com/dpsbroker/dpsbroker/clients/tpm/swtpmtest"
)

// TestStartWithoutEKCertificates covers the mode the package's users do not
// (they all want certificates): the EK is persisted, the NV index is empty.
func TestStartWithoutEKCertificates(t *testing.T) {
	d := swtpmtest.Start(t, swtpmtest.Options{}).Device(t, tpm.Options{})
	if d.RegistrationID() == "" {
		t.Fatal("no registration ID")
	}
	if _, err := d.EKCertificate(context.Background(), tpm.RSAEKCertIndex); err == nil {
		t.Fatal("EK certificate present without Options.EKCertificates")
	}
}
