package admin_test

import (
	"encoding/base64"
	"net/http"
	"strings"
	"testing"

	"github.com/dpsbroker/dpsbroker/broker/admin"
	"github.com/dpsbroker/dpsbroker/broker/admin/admintest"
	"github.com/dpsbroker/dpsbroker/provisioning"
)

func TestNewHandlerNeedsStore(t *testing.T) {
	if _, err := admin.NewHandler(admin.Options{Token: "x"}); err == nil {
		t.Fatal("NewHandler without a store succeeded")
	}
}

func TestAuth(t *testing.T) {
	s := admintest.Start(t, admintest.Options{})
	closed := admintest.Start(t, admintest.Options{NoToken: true})
	tests := []struct {
		name   string
		srv    *admintest.Server
		auth   string
		status int
	}{
		{"no header", s, "", http.StatusUnauthorized},
		{"wrong scheme", s, "Basic " + base64.StdEncoding.EncodeToString([]byte("a:"+admintest.Token)), http.StatusUnauthorized},
		{"wrong token", s, "Bearer nope", http.StatusUnauthorized},
		{"token prefix", s, "Bearer " + admintest.Token[:10], http.StatusUnauthorized},
		{"bearer without token", s, "Bearer", http.StatusUnauthorized},
		{"right token", s, "Bearer " + admintest.Token, http.StatusNotFound},
		{"scheme case-insensitive", s, "bearer " + admintest.Token, http.StatusNotFound},
		{"server without token refuses the right token", closed, "Bearer " + admintest.Token, http.StatusUnauthorized},
		{"server without token refuses an empty token", closed, "Bearer ", http.StatusUnauthorized},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := call(t, tt.srv, "GET", "/enrollments/dev-1?api-version=2021-10-01", nil, "Authorization", tt.auth)
			if tt.status == http.StatusUnauthorized {
				r.apiErr(t, http.StatusUnauthorized, admin.ErrorCodeUnauthorized)
				if !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Bearer") {
					t.Fatalf("WWW-Authenticate %q", r.header.Get("WWW-Authenticate"))
				}
				return
			}
			r.apiErr(t, tt.status, admin.ErrorCodeEnrollmentNotFound)
		})
	}
	// Unauthenticated requests learn nothing about routes.
	call(t, s, "GET", "/nope", nil, "Authorization", "").apiErr(t, http.StatusUnauthorized, admin.ErrorCodeUnauthorized)
}

func TestRoutingErrors(t *testing.T) {
	s := admintest.Start(t, admintest.Options{})
	tests := []struct {
		method, path string
		status, code int
		allow        string
	}{
		{"GET", "/nope", http.StatusNotFound, admin.ErrorCodeRouteNotFound, ""},
		{"GET", "/enrollments/a/b/c", http.StatusNotFound, admin.ErrorCodeRouteNotFound, ""},
		{"PATCH", "/enrollments/dev-1", http.StatusMethodNotAllowed, admin.ErrorCodeMethodNotAllowed, "GET, PUT, DELETE"},
		{"GET", "/enrollments", http.StatusMethodNotAllowed, admin.ErrorCodeMethodNotAllowed, "POST"},
		{"DELETE", "/enrollmentGroups", http.StatusMethodNotAllowed, admin.ErrorCodeMethodNotAllowed, "POST"},
		{"POST", "/enrollmentGroups/g1", http.StatusMethodNotAllowed, admin.ErrorCodeMethodNotAllowed, "GET, PUT, DELETE"},
		{"PUT", "/registrations/dev-1", http.StatusMethodNotAllowed, admin.ErrorCodeMethodNotAllowed, "GET, DELETE"},
		{"GET", "/registrations/g1/query", http.StatusMethodNotAllowed, admin.ErrorCodeMethodNotAllowed, "POST"},
		{"POST", "/certificates", http.StatusMethodNotAllowed, admin.ErrorCodeMethodNotAllowed, "GET"},
		{"GET", "/certificates/ca1/verify", http.StatusMethodNotAllowed, admin.ErrorCodeMethodNotAllowed, "POST"},
		{"GET", "/enrollments/dev-1/attestationmechanism", http.StatusMethodNotAllowed, admin.ErrorCodeMethodNotAllowed, "POST"},
		{"GET", "/certificates/ca1/generateVerificationCode", http.StatusMethodNotAllowed, admin.ErrorCodeMethodNotAllowed, "POST"},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			r := call(t, s, tt.method, tt.path, nil)
			r.apiErr(t, tt.status, tt.code)
			if got := r.header.Get("Allow"); got != tt.allow {
				t.Fatalf("Allow %q, want %q", got, tt.allow)
			}
		})
	}
}

func TestEnrollmentLifecycle(t *testing.T) {
	s := admintest.Start(t, admintest.Options{})
	p := newPKI(t)
	leaf := p.leafPEM(t, "dev-1")

	var created provisioning.IndividualEnrollment
	r := call(t, s, "PUT", "/enrollments/dev-1?api-version=2021-10-01", x509Enrollment("dev-1", leaf)).want(t, http.StatusOK)
	r.into(t, &created)
	if created.ETag == "" || created.CreatedDateTimeUTC == nil || created.LastUpdatedDateTimeUTC == nil {
		t.Fatalf("stored entity lacks etag or timestamps: %s", r.body)
	}
	if got := r.header.Get("ETag"); got != `"`+created.ETag+`"` {
		t.Fatalf("ETag header %q, etag %q", got, created.ETag)
	}
	info := created.Attestation.X509.ClientCertificates.Primary.Info
	if info == nil || !strings.Contains(info.SubjectName, "dev-1") || len(info.SHA256Thumbprint) != 64 {
		t.Fatalf("info not filled in: %s", r.body)
	}

	var got provisioning.IndividualEnrollment
	call(t, s, "GET", "/enrollments/DEV-1", nil).want(t, http.StatusOK).into(t, &got)
	if got.ETag != created.ETag || got.Attestation.X509.ClientCertificates.Primary.Info == nil {
		t.Fatalf("GET differs from PUT: %+v", got)
	}

	// If-Match: a stale etag fails, the current one (quoted or not) succeeds.
	upd := x509Enrollment("dev-1", leaf)
	upd.ProvisioningStatus = provisioning.StatusDisabled
	call(t, s, "PUT", "/enrollments/dev-1", upd, "If-Match", `"stale"`).apiErr(t, http.StatusPreconditionFailed, admin.ErrorCodePreconditionFailed)
	var updated provisioning.IndividualEnrollment
	call(t, s, "PUT", "/enrollments/dev-1", upd, "If-Match", `"`+created.ETag+`"`).want(t, http.StatusOK).into(t, &updated)
	if updated.ETag == created.ETag || updated.Enabled() {
		t.Fatalf("update not applied: %+v", updated)
	}
	if !updated.CreatedDateTimeUTC.Equal(*created.CreatedDateTimeUTC) {
		t.Fatalf("created time changed on update")
	}
	call(t, s, "PUT", "/enrollments/dev-1", upd, "If-Match", created.ETag).apiErr(t, http.StatusPreconditionFailed, admin.ErrorCodePreconditionFailed)
	call(t, s, "PUT", "/enrollments/dev-2", x509Enrollment("dev-2", p.leafPEM(t, "dev-2")), "If-Match", "*").
		apiErr(t, http.StatusPreconditionFailed, admin.ErrorCodePreconditionFailed)

	// The registration record shows on an enrollment read.
	if _, err := s.Store.PutRegistration(t.Context(), &provisioning.RegistrationState{
		RegistrationID: "dev-1", Status: provisioning.RegistrationAssigned, AssignedHub: "hub1.example.com", DeviceID: "dev-1",
	}, ""); err != nil {
		t.Fatal(err)
	}
	call(t, s, "GET", "/enrollments/dev-1", nil).want(t, http.StatusOK).into(t, &got)
	if got.RegistrationState == nil || got.RegistrationState.AssignedHub != "hub1.example.com" {
		t.Fatalf("registrationState missing: %+v", got.RegistrationState)
	}
	// ... and is read-only on write.
	upd.RegistrationState = &provisioning.RegistrationState{RegistrationID: "dev-1", Status: "bogus"}
	call(t, s, "PUT", "/enrollments/dev-1", upd).want(t, http.StatusOK)

	call(t, s, "DELETE", "/enrollments/dev-1", nil, "If-Match", created.ETag).apiErr(t, http.StatusPreconditionFailed, admin.ErrorCodePreconditionFailed)
	call(t, s, "DELETE", "/enrollments/dev-1", nil).want(t, http.StatusNoContent)
	call(t, s, "GET", "/enrollments/dev-1", nil).apiErr(t, http.StatusNotFound, admin.ErrorCodeEnrollmentNotFound)
	call(t, s, "DELETE", "/enrollments/dev-1", nil).apiErr(t, http.StatusNotFound, admin.ErrorCodeEnrollmentNotFound)
}

func TestSymmetricKeysGenerated(t *testing.T) {
	s := admintest.Start(t, admintest.Options{})
	var e provisioning.IndividualEnrollment
	call(t, s, "PUT", "/enrollments/sym-1", symmetricEnrollment("sym-1")).want(t, http.StatusOK).into(t, &e)
	k := e.Attestation.SymmetricKey
	for _, key := range []string{k.PrimaryKey, k.SecondaryKey} {
		b, err := base64.StdEncoding.DecodeString(key)
		if err != nil || len(b) != provisioning.GeneratedSymmetricKeyLen {
			t.Fatalf("generated key %q: %d bytes, %v", key, len(b), err)
		}
	}
	var att provisioning.AttestationMechanism
	call(t, s, "POST", "/enrollments/sym-1/attestationmechanism", nil).want(t, http.StatusOK).into(t, &att)
	if att.SymmetricKey == nil || att.SymmetricKey.PrimaryKey != k.PrimaryKey {
		t.Fatalf("attestationmechanism: %+v", att)
	}
	call(t, s, "POST", "/enrollments/nope/attestationmechanism", nil).apiErr(t, http.StatusNotFound, admin.ErrorCodeEnrollmentNotFound)
	call(t, s, "POST", "/enrollmentGroups/nope/attestationmechanism", nil).apiErr(t, http.StatusNotFound, admin.ErrorCodeEnrollmentGroupNotFound)
	if k.PrimaryKey == k.SecondaryKey {
		t.Fatal("primary and secondary keys are equal")
	}
	// Given keys are kept.
	given := symmetricEnrollment("sym-2")
	given.Attestation.SymmetricKey.PrimaryKey = base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))
	call(t, s, "PUT", "/enrollments/sym-2", given).want(t, http.StatusOK).into(t, &e)
	if e.Attestation.SymmetricKey.PrimaryKey != given.Attestation.SymmetricKey.PrimaryKey || e.Attestation.SymmetricKey.SecondaryKey == "" {
		t.Fatalf("keys: %+v", e.Attestation.SymmetricKey)
	}
	var g provisioning.EnrollmentGroup
	grp := &provisioning.EnrollmentGroup{EnrollmentGroupID: "symg", Attestation: provisioning.AttestationMechanism{Type: provisioning.AttestationSymmetricKey}}
	call(t, s, "PUT", "/enrollmentGroups/symg", grp).want(t, http.StatusOK).into(t, &g)
	if g.Attestation.SymmetricKey == nil || g.Attestation.SymmetricKey.PrimaryKey == "" {
		t.Fatalf("group keys not generated: %+v", g.Attestation)
	}
	call(t, s, "POST", "/enrollmentGroups/symg/attestationmechanism", nil).want(t, http.StatusOK).into(t, &att)
	if att.SymmetricKey == nil || att.SymmetricKey.PrimaryKey != g.Attestation.SymmetricKey.PrimaryKey {
		t.Fatalf("group attestationmechanism: %+v", att)
	}
	// Keys never reach the log.
	if logs := s.Logs(); strings.Contains(logs, k.PrimaryKey) || strings.Contains(logs, admintest.Token) {
		t.Fatal("log contains a key or the token")
	}
}

func TestPutRejects(t *testing.T) {
	s := admintest.Start(t, admintest.Options{MaxBodyBytes: 8 << 10})
	p := newPKI(t)
	leaf := p.leafPEM(t, "dev-1")
	notPEM := x509Enrollment("dev-1", "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
	caAsLeaf := x509Enrollment("dev-1", string(pemOf(p.inter)))
	twoProblems := x509Enrollment("dev-1", "garbage")
	twoProblems.DeviceID = "bad device id"
	big := x509Enrollment("dev-1", leaf)
	big.OptionalDeviceInformation = []byte(`{"pad":"` + strings.Repeat("x", 9<<10) + `"}`)

	tests := []struct {
		name       string
		path       string
		body       any
		status     int
		code       int
		msgHas     []string
		infoFields []string
	}{
		{"malformed JSON", "/enrollments/dev-1", raw(`{"registrationId":`), 400, admin.ErrorCodeInvalidBody, []string{"malformed JSON"}, nil},
		{"syntax error", "/enrollments/dev-1", raw(`{"registrationId" "x"}`), 400, admin.ErrorCodeInvalidBody, []string{"malformed JSON"}, nil},
		{"wrong type", "/enrollments/dev-1", raw(`{"registrationId":5}`), 400, admin.ErrorCodeValidation, []string{"registrationId"}, []string{"registrationId"}},
		{"unknown field", "/enrollments/dev-1", raw(`{"registrationId":"dev-1","attestation":{"type":"x509"},"registrationID2":1}`), 400, admin.ErrorCodeValidation,
			[]string{"registrationID2"}, []string{"registrationID2"}},
		{"not an object", "/enrollments/dev-1", raw(`[1]`), 400, admin.ErrorCodeInvalidBody, []string{"object"}, nil},
		{"empty body", "/enrollments/dev-1", nil, 400, admin.ErrorCodeInvalidBody, []string{"empty"}, nil},
		{"trailing data", "/enrollments/dev-1", raw(`{"registrationId":"dev-1"} {}`), 400, admin.ErrorCodeInvalidBody, []string{"after"}, nil},
		{"group malformed", "/enrollmentGroups/g1", raw(`{`), 400, admin.ErrorCodeInvalidBody, []string{"malformed"}, nil},
		{"CA malformed", "/certificates/ca1", raw(`{"certificate":1}`), 400, admin.ErrorCodeValidation, []string{"certificate"}, []string{"certificate"}},
		{"id mismatch", "/enrollments/dev-2", x509Enrollment("dev-1", leaf), 400, admin.ErrorCodeIDMismatch, []string{"dev-1", "dev-2"}, nil},
		{"PEM that does not parse", "/enrollments/dev-1", notPEM, 400, admin.ErrorCodeValidation, []string{"attestation.x509.clientCertificates.primary.certificate"},
			[]string{"attestation.x509.clientCertificates.primary.certificate"}},
		{"CA certificate as device certificate", "/enrollments/dev-1", caAsLeaf, 400, admin.ErrorCodeValidation, []string{"CA certificate"},
			[]string{"attestation.x509.clientCertificates.primary.certificate"}},
		{"every problem listed", "/enrollments/dev-1", twoProblems, 400, admin.ErrorCodeValidation, []string{"deviceId", "certificate"},
			[]string{"deviceId", "attestation.x509.clientCertificates.primary.certificate"}},
		{"missing attestation", "/enrollments/dev-1", raw(`{"registrationId":"dev-1"}`), 400, admin.ErrorCodeValidation, []string{"attestation.type"}, []string{"attestation.type"}},
		{"oversize", "/enrollments/dev-1", big, 413, admin.ErrorCodeBodyTooLarge, []string{"limit"}, nil},
		{"group with a leaf as signing certificate", "/enrollmentGroups/g1", x509Group("g1", leaf), 400, admin.ErrorCodeValidation, []string{"not a CA"},
			[]string{"attestation.x509.signingCertificates.primary.certificate"}},
		{"group id mismatch", "/enrollmentGroups/g2", x509Group("g1", string(pemOf(p.inter))), 400, admin.ErrorCodeIDMismatch, nil, nil},
		{"group with an unknown CA reference", "/enrollmentGroups/g1", caRefGroup("g1", "nope"), 400, admin.ErrorCodeValidation, []string{"not uploaded"},
			[]string{"attestation.x509.caReferences.primary"}},
		{"CA certificate that is a leaf", "/certificates/ca1", provisioning.CACertificate{Certificate: leaf}, 400, admin.ErrorCodeValidation, []string{"not a CA"}, []string{"certificate"}},
		{"CA certificate that does not parse", "/certificates/ca1", provisioning.CACertificate{Certificate: "xx"}, 400, admin.ErrorCodeValidation, []string{"certificate"}, []string{"certificate"}},
		{"CA name mismatch", "/certificates/ca1", provisioning.CACertificate{Name: "ca2", Certificate: string(pemOf(p.root))}, 400, admin.ErrorCodeIDMismatch, nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := call(t, s, "PUT", tt.path, tt.body).apiErr(t, tt.status, tt.code)
			for _, m := range tt.msgHas {
				if !strings.Contains(d.Message, m) {
					t.Errorf("message %q lacks %q", d.Message, m)
				}
			}
			for _, f := range tt.infoFields {
				if d.Info[f] == "" {
					t.Errorf("info lacks %q: %v", f, d.Info)
				}
			}
		})
	}
	// Nothing was stored.
	call(t, s, "GET", "/enrollments/dev-1", nil).apiErr(t, http.StatusNotFound, admin.ErrorCodeEnrollmentNotFound)
}

func TestOversizeChunked(t *testing.T) {
	s := admintest.Start(t, admintest.Options{MaxBodyBytes: 1024})
	// No Content-Length: the limit applies while reading.
	body := strings.NewReader(`{"registrationId":"` + strings.Repeat("a", 4096) + `"}`)
	req, err := http.NewRequest("PUT", s.URL+"/enrollments/a", struct{ *strings.Reader }{body})
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = -1
	req.Header.Set("Authorization", "Bearer "+s.Token)
	resp, err := s.Client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("status %d", resp.StatusCode)
	}
}

func TestRequestLog(t *testing.T) {
	s := admintest.Start(t, admintest.Options{})
	d := call(t, s, "GET", "/enrollments/dev-9?api-version=2021-10-01&secret=shh", nil).apiErr(t, http.StatusNotFound, admin.ErrorCodeEnrollmentNotFound)
	logs := s.Logs()
	for _, want := range []string{`"method":"GET"`, `"path":"/enrollments/dev-9"`, `"status":404`, `"trackingId":"` + d.TrackingID + `"`, `"duration"`} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %s: %s", want, logs)
		}
	}
	for _, never := range []string{admintest.Token, "shh"} {
		if strings.Contains(logs, never) {
			t.Errorf("log contains %q", never)
		}
	}
}
