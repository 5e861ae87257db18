package storetest

import (
	"testing"
	"time"

	"github.com/dpsbroker/dpsbroker/provisioning"
)

// runCopies checks that the store keeps its own copies: neither the value
// passed to Put nor a value returned by Get or Put aliases stored state.
func runCopies(t *testing.T, newStore func(t *testing.T) provisioning.Store) {
	t.Run("Enrollment", func(t *testing.T) {
		s, ctx := newStore(t), ctxT(t)
		in := testEnrollment("copy-1", "dev")
		put, err := s.PutEnrollment(ctx, in, "")
		if err != nil {
			t.Fatal(err)
		}
		if in.ETag != "" || in.CreatedDateTimeUTC != nil {
			t.Errorf("Put modified its argument: etag %q created %v", in.ETag, in.CreatedDateTimeUTC)
		}
		in.DeviceID = "changed-input"
		in.IoTHubs[0] = "changed-input"
		in.Attestation.SymmetricKey.PrimaryKey = "changed-input"
		put.DeviceID = "changed-returned"
		put.IoTHubs[1] = "changed-returned"
		got, err := s.GetEnrollment(ctx, "copy-1")
		if err != nil {
			t.Fatal(err)
		}
		if got.DeviceID != "dev" || got.IoTHubs[0] != "hub-a.example" || got.IoTHubs[1] != "hub-b.example" ||
			got.Attestation.SymmetricKey.PrimaryKey != "cHJpbWFyeQ==" {
			t.Fatalf("stored enrollment changed through an alias: %+v", got)
		}
		got.DeviceID = "changed-get"
		got.Attestation.SymmetricKey.SecondaryKey = "changed-get"
		*got.CreatedDateTimeUTC = time.Time{}
		again, err := s.GetEnrollment(ctx, "copy-1")
		if err != nil {
			t.Fatal(err)
		}
		if again.DeviceID != "dev" || again.Attestation.SymmetricKey.SecondaryKey != "c2Vjb25kYXJ5" || again.CreatedDateTimeUTC.IsZero() {
			t.Fatalf("stored enrollment changed through a Get result: %+v", again)
		}
	})
	t.Run("Group", func(t *testing.T) {
		s, ctx := newStore(t), ctxT(t)
		in := testGroup("copy-g", "hub.example")
		put, err := s.PutEnrollmentGroup(ctx, in, "")
		if err != nil {
			t.Fatal(err)
		}
		if in.ETag != "" {
			t.Errorf("Put modified its argument: etag %q", in.ETag)
		}
		in.IoTHubs[0] = "changed-input"
		put.IoTHubHostName = "changed-returned"
		got, err := s.GetEnrollmentGroup(ctx, "copy-g")
		if err != nil {
			t.Fatal(err)
		}
		if got.IoTHubs[0] != "hub.example" || got.IoTHubHostName != "hub.example" {
			t.Fatalf("stored group changed through an alias: %+v", got)
		}
		got.Attestation.SymmetricKey.PrimaryKey = "changed-get"
		again, err := s.GetEnrollmentGroup(ctx, "copy-g")
		if err != nil {
			t.Fatal(err)
		}
		if again.Attestation.SymmetricKey.PrimaryKey != "Z3JvdXA=" {
			t.Fatalf("stored group changed through a Get result: %+v", again)
		}
	})
	t.Run("CACertificate", func(t *testing.T) {
		s, ctx := newStore(t), ctxT(t)
		ca := NewCACertificate(t, "copy-ca")
		in := &provisioning.CACertificate{Name: "copy-ca", Certificate: ca.PEM}
		put, err := s.PutCACertificate(ctx, in, "")
		if err != nil {
			t.Fatal(err)
		}
		in.VerificationCode = "changed-input"
		put.IsVerified = true
		got, err := s.GetCACertificate(ctx, "copy-ca")
		if err != nil {
			t.Fatal(err)
		}
		if got.VerificationCode != "" || got.IsVerified {
			t.Fatalf("stored CA changed through an alias: %+v", got)
		}
		list, err := s.ListCACertificates(ctx)
		if err != nil || len(list) != 1 {
			t.Fatalf("ListCACertificates = %v, %v", list, err)
		}
		if list[0].Name != "copy-ca" || list[0].Certificate != ca.PEM {
			t.Errorf("ListCACertificates[0] = %+v", list[0])
		}
	})
	t.Run("Registration", func(t *testing.T) {
		s, ctx := newStore(t), ctxT(t)
		in := testRegistration("copy-r", "grp", "hub.example")
		in.Payload = []byte(`{"a":1}`)
		put, err := s.PutRegistration(ctx, in, "")
		if err != nil {
			t.Fatal(err)
		}
		in.Payload[1] = 'X'
		put.AssignedHub = "changed-returned"
		got, err := s.GetRegistration(ctx, "copy-r")
		if err != nil {
			t.Fatal(err)
		}
		if got.AssignedHub != "hub.example" || string(got.Payload) != `{"a":1}` || got.EnrollmentGroupID != "grp" {
			t.Fatalf("stored registration changed through an alias: %+v (payload %s)", got, got.Payload)
		}
	})
}

// runBadInput checks that nil entries are refused with an error.
func runBadInput(t *testing.T, newStore func(t *testing.T) provisioning.Store) {
	s, ctx := newStore(t), ctxT(t)
	checks := []struct {
		name string
		call func() error
	}{
		{"PutEnrollment(nil)", func() error { _, err := s.PutEnrollment(ctx, nil, ""); return err }},
		{"PutEnrollmentGroup(nil)", func() error { _, err := s.PutEnrollmentGroup(ctx, nil, ""); return err }},
		{"PutCACertificate(nil)", func() error { _, err := s.PutCACertificate(ctx, nil, ""); return err }},
		{"PutRegistration(nil)", func() error { _, err := s.PutRegistration(ctx, nil, ""); return err }},
		{"PutOperation(nil)", func() error { return s.PutOperation(ctx, nil) }},
		{"AppendEvent(nil)", func() error { _, err := s.AppendEvent(ctx, nil); return err }},
		{"GetOperation(\"\")", func() error { _, err := s.GetOperation(ctx, ""); return err }},
		{"PutChallenge(\"\")", func() error { return s.PutChallenge(ctx, "", []byte("v"), time.Minute) }},
		{"TakeChallenge(\"\")", func() error { _, err := s.TakeChallenge(ctx, ""); return err }},
		{"PutCACertificate(empty certificate)", func() error {
			_, err := s.PutCACertificate(ctx, &provisioning.CACertificate{Name: "empty"}, "")
			return err
		}},
		{"PutCACertificate(garbage certificate)", func() error {
			_, err := s.PutCACertificate(ctx, &provisioning.CACertificate{Name: "garbage", Certificate: "not a certificate"}, "")
			return err
		}},
		{"PutEnrollmentGroup(garbage signing certificate)", func() error {
			g := testGroup("garbage", "hub")
			g.Attestation = provisioning.AttestationMechanism{
				Type: provisioning.AttestationX509,
				X509: &provisioning.X509Attestation{SigningCertificates: &provisioning.X509Certificates{
					Primary: &provisioning.X509CertificateWithInfo{Certificate: "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"},
				}},
			}
			_, err := s.PutEnrollmentGroup(ctx, g, "")
			return err
		}},
	}
	for _, c := range checks {
		t.Run(c.name, func(t *testing.T) {
			if err := c.call(); err == nil {
				t.Errorf("no error")
			}
		})
	}
	// Refused writes leave nothing behind.
	if groups, err := s.ListEnrollmentGroups(ctx); err != nil || len(groups) != 0 {
		t.Errorf("ListEnrollmentGroups after refused writes = %d groups, %v", len(groups), err)
	}
	if cas, err := s.ListCACertificates(ctx); err != nil || len(cas) != 0 {
		t.Errorf("ListCACertificates after refused writes = %d, %v", len(cas), err)
	}
}
