package bolt

import (
	"errors"
	"testing"

	"github.com/dpsbroker/dpsbroker/provisioning"
	"github.com/dpsbroker/dpsbroker/provisioning/store/storetest"
)

// TestThumbprintFollowsTheDomainRule checks that the store indexes a
// certificate field exactly when provisioning.ParseCertificate accepts it,
// so no entry is indexed that the evaluator could never match.
func TestThumbprintFollowsTheDomainRule(t *testing.T) {
	c := storetest.NewCACertificate(t, "bolt thumbprint")
	for _, tt := range storetest.CertificateFields(c) {
		t.Run(tt.Name, func(t *testing.T) {
			th, err := thumbprint("certificate", tt.Text)
			if !tt.OK {
				var ve *provisioning.ValidationError
				if !errors.As(err, &ve) || len(ve.Problems) != 1 || ve.Problems[0].Field != "certificate" {
					t.Fatalf("err = %v, want a *provisioning.ValidationError on field certificate", err)
				}
				return
			}
			if err != nil || th != c.SHA256 {
				t.Fatalf("thumbprint = %x, %v; want %x", th, err, c.SHA256)
			}
		})
	}
}
