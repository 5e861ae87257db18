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
	sw := swtpmtest.Start(t, swtpmtest.Options{})
	tr, err := tpm.OpenTCP(sw.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	ctx := context.Background()
	d, err := tpm.New(ctx, tr, tpm.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if d.RegistrationID() == "" {
		t.Fatal("no registration ID")
	}
	if _, err := d.EKCertificate(ctx, tpm.RSAEKCertIndex); err == nil {
		t.Fatal("EK certificate present without Options.EKCertificates")
	}
}
