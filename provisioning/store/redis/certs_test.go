package redisstore

import (
	"encoding/hex"
	"errors"
	"testing"

	"github.com/dpsbroker/dpsbroker/provisioning"
	"github.com/dpsbroker/dpsbroker/provisioning/store/storetest"
)

// TestCertThumbprintFollowsTheDomainRule checks that the store indexes a
// certificate field exactly when provisioning.ParseCertificate accepts it,
// under the lower-case hex key the index scripts use.
func TestCertThumbprintFollowsTheDomainRule(t *testing.T) {
	c := storetest.NewCACertificate(t, "redis thumbprint")
	want := hex.EncodeToString(c.SHA256[:])
	for _, tt := range storetest.CertificateFields(c) {
		t.Run(tt.Name, func(t *testing.T) {
			tp, err := certThumbprint("certificate", tt.Text)
			if !tt.OK {
				if !errors.Is(err, provisioning.ErrBadCertificate) {
					t.Fatalf("err = %v, want one wrapping provisioning.ErrBadCertificate", err)
				}
				return
			}
			if err != nil || tp != want {
				t.Fatalf("certThumbprint = %q, %v; want %q", tp, err, want)
			}
		})
	}
}
