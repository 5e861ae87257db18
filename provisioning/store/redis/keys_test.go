package redisstore

import (
	"strings"
	"testing"
	"time"

	"github.com/dpsbroker/dpsbroker/provisioning"
	"github.com/dpsbroker/dpsbroker/provisioning/store/redistest"
	"github.com/dpsbroker/dpsbroker/provisioning/store/storetest"
)

// TestEveryKeyCarriesTheHashTag runs every kind of write and checks that
// every key the scope created carries the scope's hash tag as its first
// {...}, so that all of them live in one Redis Cluster slot and the
// multi-key scripts are legal there.
func TestEveryKeyCarriesTheHashTag(t *testing.T) {
	srv := redistest.Shared(t)
	e := newEnv(t, srv)
	e.scope = "Scope:One" // IDs scopes may hold ':'; the tag is what matters
	s := e.open(t, nil)
	ctx := ctxT(t)
	ca := storetest.NewCACertificate(t, "keys-ca")
	sign := storetest.NewCACertificate(t, "keys-sign")

	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	_, err := s.PutEnrollment(ctx, &provisioning.IndividualEnrollment{RegistrationID: "Dev-1"}, "")
	must(err)
	_, err = s.PutCACertificate(ctx, &provisioning.CACertificate{Name: "Root", Certificate: ca.PEM}, "")
	must(err)
	_, err = s.PutEnrollmentGroup(ctx, &provisioning.EnrollmentGroup{EnrollmentGroupID: "Grp", Attestation: provisioning.AttestationMechanism{
		Type: provisioning.AttestationX509,
		X509: &provisioning.X509Attestation{
			SigningCertificates: &provisioning.X509Certificates{Primary: &provisioning.X509CertificateWithInfo{Certificate: sign.PEM}},
			CAReferences:        &provisioning.X509CAReferences{Primary: "root"},
		}}}, "")
	must(err)
	_, err = s.PutRegistration(ctx, &provisioning.RegistrationState{RegistrationID: "Dev-1", EnrollmentGroupID: "Grp"}, "")
	must(err)
	must(s.PutOperation(ctx, &provisioning.Operation{OperationID: "op-1", Expires: time.Now().Add(time.Minute)}))
	must(s.PutChallenge(ctx, "chal-1", []byte("nonce"), time.Minute))
	_, err = s.AppendEvent(ctx, &provisioning.Event{Type: provisioning.EventAssigned, RegistrationID: "Dev-1"})
	must(err)
	_, err = s.GroupsByCertificate(ctx, sign.SHA256)
	must(err)

	reply, err := srv.DoDB(e.db, "KEYS", "*")
	must(err)
	keys, _ := reply.([]any)
	if len(keys) < 12 {
		t.Fatalf("only %d keys after writes of every kind: %v", len(keys), keys)
	}
	tag := "{" + e.scope + "}"
	for _, k := range append(keys, s.k.changes()) {
		key, _ := k.(string)
		open := strings.IndexByte(key, '{')
		end := strings.IndexByte(key[open+1:], '}')
		if open < 0 || end < 0 || key[open:open+end+2] != tag {
			t.Errorf("key %q does not hash on %s", key, tag)
		}
	}
}
