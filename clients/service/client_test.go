package service_test

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/dpsbroker/dpsbroker/broker/admin/admintest"
	"github.com/dpsbroker/dpsbroker/clients/service"
	"github.com/dpsbroker/dpsbroker/provisioning"
	"github.com/dpsbroker/dpsbroker/provisioning/pkitest"
)

func newClient(t *testing.T) (*service.Client, *admintest.Server) {
	t.Helper()
	s := admintest.Start(t, admintest.Options{})
	return service.New(s.URL+"/", s.Token, s.Client), s
}

func mustPKI(t *testing.T) (*pkitest.CA, *pkitest.CA) {
	t.Helper()
	root, err := pkitest.NewRootCA("Client Test Root")
	if err != nil {
		t.Fatal(err)
	}
	inter, err := root.NewIntermediate("Client Test Intermediate")
	if err != nil {
		t.Fatal(err)
	}
	return root, inter
}

func leafPEM(t *testing.T, ca *pkitest.CA, cn string) string {
	t.Helper()
	l, err := ca.NewLeaf(cn)
	if err != nil {
		t.Fatal(err)
	}
	return string(pkitest.CertPEM(l.Cert))
}

func x509Enrollment(id, pem string) *provisioning.IndividualEnrollment {
	return &provisioning.IndividualEnrollment{RegistrationID: id, Attestation: provisioning.AttestationMechanism{
		Type: provisioning.AttestationX509,
		X509: &provisioning.X509Attestation{ClientCertificates: &provisioning.X509Certificates{
			Primary: &provisioning.X509CertificateWithInfo{Certificate: pem}}},
	}}
}

func symmetric(id string) *provisioning.IndividualEnrollment {
	return &provisioning.IndividualEnrollment{RegistrationID: id, Attestation: provisioning.AttestationMechanism{
		Type: provisioning.AttestationSymmetricKey, SymmetricKey: &provisioning.SymmetricKeyAttestation{}}}
}

func TestEnrollments(t *testing.T) {
	c, _ := newClient(t)
	ctx := t.Context()
	_, inter := mustPKI(t)

	e, err := c.PutEnrollment(ctx, x509Enrollment("dev-1", leafPEM(t, inter, "dev-1")), "")
	if err != nil {
		t.Fatal(err)
	}
	if e.ETag == "" || e.Attestation.X509.ClientCertificates.Primary.Info == nil {
		t.Fatalf("put: %+v", e)
	}
	got, err := c.GetEnrollment(ctx, "dev-1")
	if err != nil || got.ETag != e.ETag {
		t.Fatalf("get: %+v, %v", got, err)
	}
	got.ProvisioningStatus = provisioning.StatusDisabled
	if _, err := c.PutEnrollment(ctx, got, "stale"); !errors.Is(err, provisioning.ErrPreconditionFailed) {
		t.Fatalf("stale put: %v", err)
	}
	upd, err := c.PutEnrollment(ctx, got, got.ETag)
	if err != nil || upd.Enabled() {
		t.Fatalf("update: %+v, %v", upd, err)
	}

	// Validation errors carry the server's message and field info.
	_, err = c.PutEnrollment(ctx, x509Enrollment("dev-2", "not a certificate"), "")
	var apiErr *service.APIError
	if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusBadRequest || apiErr.Details.ErrorCode/1000 != 400 ||
		apiErr.Details.Info["attestation.x509.clientCertificates.primary.certificate"] == "" || apiErr.Details.TrackingID == "" {
		t.Fatalf("validation error: %#v", err)
	}
	if !strings.Contains(err.Error(), "certificate") || !strings.Contains(err.Error(), apiErr.Details.TrackingID) {
		t.Fatalf("error text %q", err)
	}

	for i := range 4 {
		if _, err := c.PutEnrollment(ctx, symmetric(fmt.Sprintf("sym-%d", i)), ""); err != nil {
			t.Fatal(err)
		}
	}
	page, next, err := c.QueryEnrollments(ctx, 2, "")
	if err != nil || len(page) != 2 || next == "" {
		t.Fatalf("first page: %d items, next %q, %v", len(page), next, err)
	}
	page2, _, err := c.QueryEnrollments(ctx, 2, next)
	if err != nil || len(page2) != 2 || page2[0].RegistrationID == page[0].RegistrationID {
		t.Fatalf("second page: %v, %v", page2, err)
	}
	all, err := c.ListEnrollments(ctx)
	if err != nil || len(all) != 5 {
		t.Fatalf("list: %d, %v", len(all), err)
	}

	if err := c.DeleteEnrollment(ctx, "dev-1", e.ETag); !errors.Is(err, provisioning.ErrPreconditionFailed) {
		t.Fatalf("stale delete: %v", err)
	}
	if err := c.DeleteEnrollment(ctx, "dev-1", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetEnrollment(ctx, "dev-1"); !errors.Is(err, provisioning.ErrNotFound) {
		t.Fatalf("get deleted: %v", err)
	}
}

func TestGroupsCAAndRegistrations(t *testing.T) {
	c, s := newClient(t)
	ctx := t.Context()
	root, inter := mustPKI(t)

	ca, err := c.PutCACertificate(ctx, &provisioning.CACertificate{Name: "root", Certificate: string(pkitest.CertPEM(root.Cert))}, "")
	if err != nil {
		t.Fatal(err)
	}
	ref := &provisioning.EnrollmentGroup{EnrollmentGroupID: "by-ref", Attestation: provisioning.AttestationMechanism{
		Type: provisioning.AttestationX509, X509: &provisioning.X509Attestation{CAReferences: &provisioning.X509CAReferences{Primary: "root"}}}}
	if _, err := c.PutEnrollmentGroup(ctx, ref, ""); err == nil {
		t.Fatal("group referencing an unverified CA was accepted")
	}
	withCode, err := c.GenerateVerificationCode(ctx, "root", ca.ETag)
	if err != nil {
		t.Fatal(err)
	}
	proof, err := root.NewLeaf(withCode.VerificationCode)
	if err != nil {
		t.Fatal(err)
	}
	verified, err := c.VerifyCACertificate(ctx, "root", withCode.ETag, string(pkitest.CertPEM(proof.Cert)))
	if err != nil || !verified.IsVerified {
		t.Fatalf("verify: %+v, %v", verified, err)
	}
	if _, err := c.PutEnrollmentGroup(ctx, ref, ""); err != nil {
		t.Fatal(err)
	}
	signing := &provisioning.EnrollmentGroup{EnrollmentGroupID: "by-cert", Attestation: provisioning.AttestationMechanism{
		Type: provisioning.AttestationX509, X509: &provisioning.X509Attestation{SigningCertificates: &provisioning.X509Certificates{
			Primary: &provisioning.X509CertificateWithInfo{Certificate: string(pkitest.CertPEM(inter.Cert))}}}}}
	g, err := c.PutEnrollmentGroup(ctx, signing, "")
	if err != nil {
		t.Fatal(err)
	}
	if got, err := c.GetEnrollmentGroup(ctx, "by-cert"); err != nil || got.ETag != g.ETag {
		t.Fatalf("get group: %v", err)
	}
	groups, err := c.ListEnrollmentGroups(ctx)
	if err != nil || len(groups) != 2 {
		t.Fatalf("groups: %d, %v", len(groups), err)
	}
	cas, err := c.ListCACertificates(ctx)
	if err != nil || len(cas) != 1 || cas[0].Name != "root" {
		t.Fatalf("CAs: %+v, %v", cas, err)
	}
	if got, err := c.GetCACertificate(ctx, "root"); err != nil || !got.IsVerified {
		t.Fatalf("get CA: %+v, %v", got, err)
	}

	for i, grp := range []string{"by-cert", "by-cert", "by-ref"} {
		if _, err := s.Store.PutRegistration(ctx, &provisioning.RegistrationState{
			RegistrationID: fmt.Sprintf("d%d", i), Status: provisioning.RegistrationAssigned, AssignedHub: "hub.example.com",
			DeviceID: fmt.Sprintf("d%d", i), EnrollmentGroupID: grp}, ""); err != nil {
			t.Fatal(err)
		}
	}
	regs, err := c.ListRegistrations(ctx, "by-cert")
	if err != nil || len(regs) != 2 {
		t.Fatalf("registrations of by-cert: %d, %v", len(regs), err)
	}
	if all, err := c.ListRegistrations(ctx, ""); err != nil || len(all) != 3 {
		t.Fatalf("all registrations: %d, %v", len(all), err)
	}
	if r, err := c.GetRegistration(ctx, "d0"); err != nil || r.AssignedHub != "hub.example.com" {
		t.Fatalf("registration: %+v, %v", r, err)
	}
	if err := c.DeleteRegistration(ctx, "d0", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetRegistration(ctx, "d0"); !errors.Is(err, provisioning.ErrNotFound) {
		t.Fatalf("deleted registration: %v", err)
	}

	if err := c.DeleteEnrollmentGroup(ctx, "by-ref", ""); err != nil {
		t.Fatal(err)
	}
	if err := c.DeleteCACertificate(ctx, "root", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetCACertificate(ctx, "root"); !errors.Is(err, provisioning.ErrNotFound) {
		t.Fatalf("deleted CA: %v", err)
	}
}

func TestBulk(t *testing.T) {
	c, _ := newClient(t)
	ctx := t.Context()
	res, err := c.BulkEnrollments(ctx, service.BulkCreate, []*provisioning.IndividualEnrollment{symmetric("a"), symmetric("b")})
	if err != nil || !res.IsSuccessful {
		t.Fatalf("bulk create: %+v, %v", res, err)
	}
	res, err = c.BulkEnrollments(ctx, service.BulkCreate, []*provisioning.IndividualEnrollment{symmetric("a")})
	if err != nil || res.IsSuccessful || len(res.Errors) != 1 || res.Errors[0].RegistrationID != "a" || res.Errors[0].ErrorCode != 409001 {
		t.Fatalf("bulk create existing: %+v, %v", res, err)
	}
	grp := &provisioning.EnrollmentGroup{EnrollmentGroupID: "g", Attestation: provisioning.AttestationMechanism{Type: provisioning.AttestationSymmetricKey}}
	res, err = c.BulkEnrollmentGroups(ctx, service.BulkUpdate, []*provisioning.EnrollmentGroup{grp})
	if err != nil || !res.IsSuccessful {
		t.Fatalf("bulk groups: %+v, %v", res, err)
	}
	many := make([]*provisioning.IndividualEnrollment, service.MaxBulkItems+1)
	for i := range many {
		many[i] = symmetric(fmt.Sprintf("m%d", i))
	}
	var apiErr *service.APIError
	if _, err := c.BulkEnrollments(ctx, service.BulkCreate, many); !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusBadRequest {
		t.Fatalf("bulk over the limit: %v", err)
	}
}

func TestTransportAndAuthErrors(t *testing.T) {
	s := admintest.Start(t, admintest.Options{})
	ctx := t.Context()
	var apiErr *service.APIError

	_, err := service.New(s.URL, "wrong", s.Client).GetEnrollment(ctx, "x")
	if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusUnauthorized {
		t.Fatalf("wrong token: %v", err)
	}
	// A client that does not trust the server's certificate fails in TLS.
	if _, err := service.New(s.URL, s.Token, &http.Client{}).GetEnrollment(ctx, "x"); err == nil || errors.As(err, &apiErr) {
		t.Fatalf("untrusted server: %v", err)
	}
	// A non-DPS error body (a proxy's page) still yields an APIError.
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "bad gateway from proxy", http.StatusBadGateway)
	}))
	defer proxy.Close()
	_, err = service.New(proxy.URL, "t", nil).GetEnrollment(ctx, "x")
	if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusBadGateway || !strings.Contains(apiErr.Details.Message, "proxy") {
		t.Fatalf("proxy error: %#v", err)
	}
}
