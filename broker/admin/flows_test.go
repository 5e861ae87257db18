package admin_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/dpsbroker/dpsbroker/broker/admin"
	"github.com/dpsbroker/dpsbroker/broker/admin/admintest"
	"github.com/dpsbroker/dpsbroker/provisioning"
	"github.com/dpsbroker/dpsbroker/provisioning/pkitest"
)

func TestGroupLifecycle(t *testing.T) {
	s := admintest.Start(t, admintest.Options{})
	p := newPKI(t)
	var g provisioning.EnrollmentGroup
	r := call(t, s, "PUT", "/enrollmentGroups/g1", x509Group("g1", string(pemOf(p.inter)))).want(t, http.StatusOK)
	r.into(t, &g)
	if g.ETag == "" || g.Attestation.X509.SigningCertificates.Primary.Info == nil {
		t.Fatalf("group not filled in: %s", r.body)
	}
	call(t, s, "GET", "/enrollmentGroups/G1", nil).want(t, http.StatusOK).into(t, &g)
	upd := x509Group("g1", string(pemOf(p.inter)))
	upd.ProvisioningStatus = provisioning.StatusDisabled
	call(t, s, "PUT", "/enrollmentGroups/g1", upd, "If-Match", "nope").apiErr(t, http.StatusPreconditionFailed, admin.ErrorCodePreconditionFailed)
	call(t, s, "PUT", "/enrollmentGroups/g1", upd, "If-Match", g.ETag).want(t, http.StatusOK)
	call(t, s, "DELETE", "/enrollmentGroups/g1", nil, "If-Match", g.ETag).apiErr(t, http.StatusPreconditionFailed, admin.ErrorCodePreconditionFailed)
	call(t, s, "DELETE", "/enrollmentGroups/g1", nil).want(t, http.StatusNoContent)
	call(t, s, "GET", "/enrollmentGroups/g1", nil).apiErr(t, http.StatusNotFound, admin.ErrorCodeEnrollmentGroupNotFound)
}

// TestCAProofOfPossession walks the upload, code, verify flow and every way
// the proof can be wrong.
func TestCAProofOfPossession(t *testing.T) {
	s := admintest.Start(t, admintest.Options{})
	p := newPKI(t)
	other := newPKI(t)

	var ca provisioning.CACertificate
	call(t, s, "PUT", "/certificates/ca1", provisioning.CACertificate{Certificate: string(pemOf(p.root))}).want(t, http.StatusOK).into(t, &ca)
	if ca.Name != "ca1" || ca.IsVerified || ca.Thumbprint == "" || ca.Subject == "" || ca.Expiry == nil || ca.ETag == "" {
		t.Fatalf("uploaded CA: %+v", ca)
	}
	// A group cannot reference an unverified CA.
	d := call(t, s, "PUT", "/enrollmentGroups/g1", caRefGroup("g1", "ca1")).apiErr(t, http.StatusBadRequest, admin.ErrorCodeValidation)
	if !strings.Contains(d.Info["attestation.x509.caReferences.primary"], "not verified") {
		t.Fatalf("info: %v", d.Info)
	}

	call(t, s, "POST", "/certificates/ca1/verify", map[string]string{"certificate": p.leafPEM(t, "x")}).
		apiErr(t, http.StatusBadRequest, admin.ErrorCodeNoVerificationCode)
	call(t, s, "POST", "/certificates/ca1/generateVerificationCode", nil, "If-Match", "stale").
		apiErr(t, http.StatusPreconditionFailed, admin.ErrorCodePreconditionFailed)
	call(t, s, "POST", "/certificates/nope/generateVerificationCode", nil).apiErr(t, http.StatusNotFound, admin.ErrorCodeCACertificateNotFound)
	var withCode provisioning.CACertificate
	call(t, s, "POST", "/certificates/ca1/generateVerificationCode", nil, "If-Match", ca.ETag).want(t, http.StatusOK).into(t, &withCode)
	code := withCode.VerificationCode
	if len(code) < 32 || withCode.ETag == ca.ETag {
		t.Fatalf("verification code %q, etag %q", code, withCode.ETag)
	}

	proofBy := func(issuer *pkitest.CA, cn string, opts ...pkitest.Option) string {
		l, err := issuer.NewLeaf(cn, opts...)
		if err != nil {
			t.Fatal(err)
		}
		return string(pkitest.CertPEM(l.Cert))
	}
	fails := []struct {
		name string
		body any
		code int
	}{
		{"wrong CN", map[string]string{"certificate": proofBy(p.root, "not-the-code")}, admin.ErrorCodeVerificationFailed},
		{"other CA's key", map[string]string{"certificate": proofBy(other.root, code)}, admin.ErrorCodeVerificationFailed},
		{"signed by the intermediate", map[string]string{"certificate": proofBy(p.inter, code)}, admin.ErrorCodeVerificationFailed},
		{"wrong key, right name", map[string]string{"certificate": proofBy(p.root, code, pkitest.SignedByWrongKey())}, admin.ErrorCodeVerificationFailed},
		{"expired", map[string]string{"certificate": proofBy(p.root, code, pkitest.Expired())}, admin.ErrorCodeVerificationFailed},
		{"PEM that does not parse", map[string]string{"certificate": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----"}, admin.ErrorCodeVerificationFailed},
		{"no certificate", map[string]string{}, admin.ErrorCodeValidation},
		{"malformed JSON", raw(`{"certificate":`), admin.ErrorCodeInvalidBody},
	}
	for _, f := range fails {
		t.Run(f.name, func(t *testing.T) {
			call(t, s, "POST", "/certificates/ca1/verify", f.body).apiErr(t, http.StatusBadRequest, f.code)
		})
	}
	call(t, s, "POST", "/certificates/ca1/verify", map[string]string{"certificate": proofBy(p.root, code)}, "If-Match", ca.ETag).
		apiErr(t, http.StatusPreconditionFailed, admin.ErrorCodePreconditionFailed)

	var verified provisioning.CACertificate
	call(t, s, "POST", "/certificates/ca1/verify?api-version=2022-02-05", map[string]string{"certificate": proofBy(p.root, code)}, "If-Match", withCode.ETag).
		want(t, http.StatusOK).into(t, &verified)
	if !verified.IsVerified || verified.VerificationCode != "" {
		t.Fatalf("after verify: %+v", verified)
	}
	// The code is single-use.
	call(t, s, "POST", "/certificates/ca1/verify", map[string]string{"certificate": proofBy(p.root, code)}).
		apiErr(t, http.StatusBadRequest, admin.ErrorCodeNoVerificationCode)

	// Now a group may reference it.
	var g provisioning.EnrollmentGroup
	call(t, s, "PUT", "/enrollmentGroups/g1", caRefGroup("g1", "ca1")).want(t, http.StatusOK).into(t, &g)

	// Verify on upload (self-attested) and the list.
	call(t, s, "PUT", "/certificates/ca2", provisioning.CACertificate{Certificate: string(pemOf(other.root)), IsVerified: true}).want(t, http.StatusOK)
	var list struct {
		Value []provisioning.CACertificate `json:"value"`
	}
	call(t, s, "GET", "/certificates", nil).want(t, http.StatusOK).into(t, &list)
	if len(list.Value) != 2 || !list.Value[0].IsVerified || !list.Value[1].IsVerified {
		t.Fatalf("list: %+v", list.Value)
	}
	// Re-uploading drops a pending code; the body cannot set one.
	call(t, s, "POST", "/certificates/ca2/generateVerificationCode", nil).want(t, http.StatusOK)
	var re provisioning.CACertificate
	call(t, s, "PUT", "/certificates/ca2", provisioning.CACertificate{Certificate: string(pemOf(other.root)), VerificationCode: "mine"}).want(t, http.StatusOK).into(t, &re)
	if re.VerificationCode != "" || re.IsVerified {
		t.Fatalf("re-upload: %+v", re)
	}
	call(t, s, "GET", "/certificates/ca2", nil).want(t, http.StatusOK)
	call(t, s, "DELETE", "/certificates/ca2", nil, "If-Match", "old").apiErr(t, http.StatusPreconditionFailed, admin.ErrorCodePreconditionFailed)
	call(t, s, "DELETE", "/certificates/ca2", nil).want(t, http.StatusNoContent)
	call(t, s, "GET", "/certificates/ca2", nil).apiErr(t, http.StatusNotFound, admin.ErrorCodeCACertificateNotFound)
}

// queryAll pages through a query and returns the raw pages' sizes and the
// IDs in order.
func queryAll[T any](t *testing.T, s *admintest.Server, path string, pageSize int, itemType string, id func(T) string) (sizes []int, ids []string) {
	t.Helper()
	cont := ""
	for range 100 {
		hdr := []string{"x-ms-max-item-count", fmt.Sprint(pageSize)}
		if cont != "" {
			hdr = append(hdr, "x-ms-continuation", cont)
		}
		r := call(t, s, "POST", path, map[string]string{"query": "*"}, hdr...).want(t, http.StatusOK)
		if got := r.header.Get("x-ms-item-type"); got != itemType {
			t.Fatalf("x-ms-item-type %q, want %q", got, itemType)
		}
		var page []T
		r.into(t, &page)
		sizes = append(sizes, len(page))
		for _, it := range page {
			ids = append(ids, id(it))
		}
		if cont = r.header.Get("x-ms-continuation"); cont == "" {
			return sizes, ids
		}
	}
	t.Fatal("query never ended")
	return nil, nil
}

func TestQueries(t *testing.T) {
	s := admintest.Start(t, admintest.Options{})
	p := newPKI(t)
	ctx := t.Context()
	for i := range 23 {
		if _, err := s.Store.PutEnrollment(ctx, symmetricWithKey(fmt.Sprintf("dev-%02d", i)), ""); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 5 {
		if _, err := s.Store.PutEnrollmentGroup(ctx, x509Group(fmt.Sprintf("g%d", i), string(pemOf(p.inter))), ""); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 7 {
		group := "g1"
		if i%2 == 0 {
			group = "g2"
		}
		if _, err := s.Store.PutRegistration(ctx, &provisioning.RegistrationState{
			RegistrationID: fmt.Sprintf("reg-%d", i), Status: provisioning.RegistrationAssigned, AssignedHub: "hub.example.com",
			DeviceID: fmt.Sprintf("reg-%d", i), EnrollmentGroupID: group,
		}, ""); err != nil {
			t.Fatal(err)
		}
	}

	sizes, ids := queryAll(t, s, "/enrollments/query?api-version=2021-10-01", 10, "Enrollment", func(e provisioning.IndividualEnrollment) string { return e.RegistrationID })
	if fmt.Sprint(sizes) != "[10 10 3]" || len(ids) != 23 || ids[0] != "dev-00" || ids[22] != "dev-22" {
		t.Fatalf("enrollment pages %v, ids %v", sizes, ids)
	}
	sizes, ids = queryAll(t, s, "/enrollmentGroups/query", 2, "EnrollmentGroup", func(g provisioning.EnrollmentGroup) string {
		if g.Attestation.X509.SigningCertificates.Primary.Info == nil {
			t.Fatal("group info not filled in")
		}
		return g.EnrollmentGroupID
	})
	if fmt.Sprint(sizes) != "[2 2 1]" || strings.Join(ids, ",") != "g0,g1,g2,g3,g4" {
		t.Fatalf("group pages %v, ids %v", sizes, ids)
	}
	// FillInfo on a page must not write into the store's shared snapshot.
	shared, err := s.Store.ListEnrollmentGroups(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if shared[0].Attestation.X509.SigningCertificates.Primary.Info != nil {
		t.Fatal("query modified the store's shared group snapshot")
	}
	regID := func(r provisioning.RegistrationState) string { return r.RegistrationID }
	if _, ids = queryAll(t, s, "/registrations/g2/query", 3, "DeviceRegistration", regID); strings.Join(ids, ",") != "reg-0,reg-2,reg-4,reg-6" {
		t.Fatalf("group g2 registrations %v", ids)
	}
	if _, ids = queryAll(t, s, "/registrations/query", 100, "DeviceRegistration", regID); len(ids) != 7 {
		t.Fatalf("all registrations %v", ids)
	}
	if _, ids = queryAll(t, s, "/registrations/none/query", 5, "DeviceRegistration", regID); len(ids) != 0 {
		t.Fatalf("registrations of an unknown group: %v", ids)
	}
	// An empty body and SELECT * are "everything" too.
	call(t, s, "POST", "/enrollments/query", nil).want(t, http.StatusOK)
	call(t, s, "POST", "/enrollmentGroups/query", map[string]string{"query": "select * FROM enrollmentGroups"}).want(t, http.StatusOK)

	bad := []struct {
		name string
		body any
		hdr  []string
	}{
		{"unsupported query", map[string]string{"query": "SELECT * FROM enrollments WHERE x = 1"}, nil},
		{"query of another collection", map[string]string{"query": "SELECT * FROM enrollmentGroups"}, nil},
		{"page size zero", nil, []string{"x-ms-max-item-count", "0"}},
		{"page size not a number", nil, []string{"x-ms-max-item-count", "ten"}},
		{"bad continuation", nil, []string{"x-ms-continuation", "%%%"}},
	}
	for _, b := range bad {
		t.Run(b.name, func(t *testing.T) {
			call(t, s, "POST", "/enrollments/query", b.body, b.hdr...).apiErr(t, http.StatusBadRequest, admin.ErrorCodeBadQuery)
		})
	}
	call(t, s, "POST", "/enrollments/query", raw(`{"query":`)).apiErr(t, http.StatusBadRequest, admin.ErrorCodeInvalidBody)
}

func symmetricWithKey(id string) *provisioning.IndividualEnrollment {
	e := symmetricEnrollment(id)
	e.Attestation.SymmetricKey.PrimaryKey = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
	return e
}

func TestRegistrations(t *testing.T) {
	s := admintest.Start(t, admintest.Options{})
	reg, err := s.Store.PutRegistration(t.Context(), &provisioning.RegistrationState{
		RegistrationID: "dev-1", Status: provisioning.RegistrationAssigned, AssignedHub: "hub.example.com", DeviceID: "dev-1",
	}, "")
	if err != nil {
		t.Fatal(err)
	}
	var got provisioning.RegistrationState
	r := call(t, s, "GET", "/registrations/DEV-1", nil).want(t, http.StatusOK)
	r.into(t, &got)
	if got.AssignedHub != "hub.example.com" || got.ETag != reg.ETag || r.header.Get("ETag") == "" {
		t.Fatalf("registration: %s", r.body)
	}
	call(t, s, "DELETE", "/registrations/dev-1", nil, "If-Match", "old").apiErr(t, http.StatusPreconditionFailed, admin.ErrorCodePreconditionFailed)
	call(t, s, "DELETE", "/registrations/dev-1", nil, "If-Match", reg.ETag).want(t, http.StatusNoContent)
	call(t, s, "GET", "/registrations/dev-1", nil).apiErr(t, http.StatusNotFound, admin.ErrorCodeRegistrationNotFound)
	call(t, s, "DELETE", "/registrations/dev-1", nil).apiErr(t, http.StatusNotFound, admin.ErrorCodeRegistrationNotFound)
}

type bulkResult struct {
	IsSuccessful bool `json:"isSuccessful"`
	Errors       []struct {
		RegistrationID    string `json:"registrationId"`
		EnrollmentGroupID string `json:"enrollmentGroupId"`
		ErrorCode         int    `json:"errorCode"`
		ErrorStatus       string `json:"errorStatus"`
	} `json:"errors"`
}

func TestBulkEnrollments(t *testing.T) {
	s := admintest.Start(t, admintest.Options{})
	p := newPKI(t)
	bulk := func(mode string, es ...*provisioning.IndividualEnrollment) bulkResult {
		t.Helper()
		var res bulkResult
		call(t, s, "POST", "/enrollments?api-version=2021-10-01", map[string]any{"mode": mode, "enrollments": es}).want(t, http.StatusOK).into(t, &res)
		return res
	}
	three := []*provisioning.IndividualEnrollment{symmetricEnrollment("b1"), symmetricEnrollment("b2"), x509Enrollment("b3", p.leafPEM(t, "b3"))}
	if res := bulk("create", three...); !res.IsSuccessful || len(res.Errors) != 0 {
		t.Fatalf("create: %+v", res)
	}
	res := bulk("create", symmetricEnrollment("b1"), symmetricEnrollment("b4"))
	if res.IsSuccessful || len(res.Errors) != 1 || res.Errors[0].RegistrationID != "b1" || res.Errors[0].ErrorCode != admin.ErrorCodeConflict {
		t.Fatalf("create existing: %+v", res)
	}
	call(t, s, "GET", "/enrollments/b4", nil).want(t, http.StatusOK) // the good item was applied

	// Invalid items report validation errors; duplicates are refused.
	bad := x509Enrollment("b5", "garbage")
	res = bulk("update", bad, symmetricEnrollment("b6"), symmetricEnrollment("B6"))
	if res.IsSuccessful || len(res.Errors) != 2 || res.Errors[0].ErrorCode != admin.ErrorCodeValidation || res.Errors[1].ErrorCode != admin.ErrorCodeBadBulk {
		t.Fatalf("update with bad items: %+v", res)
	}
	// An item that does not decode fails alone, named when possible.
	var mixed bulkResult
	call(t, s, "POST", "/enrollments", raw(`{"mode":"update","enrollments":[{"registrationId":"b7","unknown":1},7,`+
		`{"registrationId":"b8","attestation":{"type":"symmetricKey","symmetricKey":{}}}]}`)).want(t, http.StatusOK).into(t, &mixed)
	if mixed.IsSuccessful || len(mixed.Errors) != 2 || mixed.Errors[0].RegistrationID != "b7" || mixed.Errors[0].ErrorCode != admin.ErrorCodeValidation ||
		mixed.Errors[1].ErrorCode != admin.ErrorCodeInvalidBody {
		t.Fatalf("bulk with undecodable items: %+v", mixed)
	}
	call(t, s, "GET", "/enrollments/b8", nil).want(t, http.StatusOK)

	var b1 provisioning.IndividualEnrollment
	call(t, s, "GET", "/enrollments/b1", nil).want(t, http.StatusOK).into(t, &b1)
	stale := symmetricWithKey("b1")
	stale.ETag = "stale"
	noETag := symmetricWithKey("b2")
	fresh := symmetricWithKey("b1")
	fresh.ETag = b1.ETag
	res = bulk("updateIfMatchETag", stale, noETag)
	if res.IsSuccessful || len(res.Errors) != 2 || res.Errors[0].ErrorCode != admin.ErrorCodePreconditionFailed || res.Errors[1].ErrorCode != admin.ErrorCodeValidation {
		t.Fatalf("updateIfMatchETag: %+v", res)
	}
	if res = bulk("updateIfMatchETag", fresh); !res.IsSuccessful {
		t.Fatalf("updateIfMatchETag fresh: %+v", res)
	}

	res = bulk("delete", symmetricEnrollment("b1"), symmetricEnrollment("b2"), symmetricEnrollment("nope"))
	if res.IsSuccessful || len(res.Errors) != 1 || res.Errors[0].ErrorCode != admin.ErrorCodeEnrollmentNotFound {
		t.Fatalf("delete: %+v", res)
	}
	call(t, s, "GET", "/enrollments/b1", nil).apiErr(t, http.StatusNotFound, admin.ErrorCodeEnrollmentNotFound)

	eleven := make([]*provisioning.IndividualEnrollment, 11)
	for i := range eleven {
		eleven[i] = symmetricEnrollment(fmt.Sprintf("x%d", i))
	}
	requestErrors := []struct {
		name string
		body any
		code int
	}{
		{"eleven items", map[string]any{"mode": "create", "enrollments": eleven}, admin.ErrorCodeBadBulk},
		{"no items", map[string]any{"mode": "create", "enrollments": []any{}}, admin.ErrorCodeBadBulk},
		{"no mode", map[string]any{"enrollments": three}, admin.ErrorCodeBadBulk},
		{"unknown mode", map[string]any{"mode": "upsert", "enrollments": three}, admin.ErrorCodeBadBulk},
		{"malformed", raw(`{"mode":"create","enrollments":[{]}`), admin.ErrorCodeInvalidBody},
	}
	for _, re := range requestErrors {
		t.Run(re.name, func(t *testing.T) {
			call(t, s, "POST", "/enrollments", re.body).apiErr(t, http.StatusBadRequest, re.code)
		})
	}
}

func TestBulkGroups(t *testing.T) {
	s := admintest.Start(t, admintest.Options{})
	p := newPKI(t)
	var res bulkResult
	call(t, s, "POST", "/enrollmentGroups", map[string]any{"mode": "create", "enrollmentGroups": []any{
		x509Group("bg1", string(pemOf(p.inter))), x509Group("bg2", p.leafPEM(t, "leaf")),
	}}).want(t, http.StatusOK).into(t, &res)
	if res.IsSuccessful || len(res.Errors) != 1 || res.Errors[0].EnrollmentGroupID != "bg2" || res.Errors[0].ErrorCode != admin.ErrorCodeValidation {
		t.Fatalf("bulk groups: %s", fmt.Sprint(res))
	}
	call(t, s, "GET", "/enrollmentGroups/bg1", nil).want(t, http.StatusOK)
	call(t, s, "POST", "/enrollmentGroups", map[string]any{"mode": "delete", "enrollmentGroups": []any{map[string]string{"enrollmentGroupId": "bg1"}}}).
		want(t, http.StatusOK).into(t, &res)
	if !res.IsSuccessful {
		t.Fatalf("bulk delete: %+v", res)
	}
}
