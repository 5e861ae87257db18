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
			tp, err := certThumbprint("certificate", tt.text)
			if !tt.ok {
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
