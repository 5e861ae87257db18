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
	tests := []struct {
		name string
		text string
		ok   bool
	}{
		{"pem", c.PEM, true},
		{"base64 der", c.Base64, true},
		{"base64 der wrapped", c.Base64[:40] + "\n" + c.Base64[40:], true},
		{"empty", "", false},
		{"two pem blocks", c.PEM + c.PEM, false},
		{"text after the pem block", c.PEM + "trailing", false},
		{"garbage", "not a certificate", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			th, err := thumbprint("certificate", tt.text)
			if !tt.ok {
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
