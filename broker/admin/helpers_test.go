package admin_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/dpsbroker/dpsbroker/broker/admin/admintest"
	"github.com/dpsbroker/dpsbroker/provisioning"
	"github.com/dpsbroker/dpsbroker/provisioning/pkitest"
	"github.com/dpsbroker/dpsbroker/provisioning/wire"
)

// raw is a request body sent as is.
type raw string

// response is what a test inspects of an answer.
type response struct {
	status int
	header http.Header
	body   []byte
}

// call sends a request with the server's token unless hdr overrides
// Authorization; hdr is name, value pairs.
func call(t *testing.T, s *admintest.Server, method, path string, body any, hdr ...string) response {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case raw:
		rd = strings.NewReader(string(b))
	default:
		j, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, s.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+s.Token)
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i+1] == "" {
			req.Header.Del(hdr[i])
		} else {
			req.Header.Set(hdr[i], hdr[i+1])
		}
	}
	resp, err := s.Client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: b}
}

// want fails unless the status is as expected.
func (r response) want(t *testing.T, status int) response {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d; body %s", r.status, status, r.body)
	}
	return r
}

// into decodes the body.
func (r response) into(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("decode %s: %v", r.body, err)
	}
}

// apiErr decodes and checks a DPS error body.
func (r response) apiErr(t *testing.T, status, code int) wire.ErrorDetails {
	t.Helper()
	r.want(t, status)
	var d wire.ErrorDetails
	r.into(t, &d)
	if d.ErrorCode != code {
		t.Fatalf("errorCode %d, want %d; body %s", d.ErrorCode, code, r.body)
	}
	if d.TrackingID == "" || d.Message == "" || d.TimestampUTC.IsZero() {
		t.Fatalf("incomplete error body: %s", r.body)
	}
	if got := r.header.Get("x-ms-request-id"); got != d.TrackingID {
		t.Fatalf("x-ms-request-id %q, trackingId %q", got, d.TrackingID)
	}
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Fatalf("Content-Type %q", ct)
	}
	return d
}

// pki is the test hierarchy: a root, an intermediate and device leaves.
type pki struct {
	root, inter *pkitest.CA
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	root, err := pkitest.NewRootCA("Admin Test Root")
	if err != nil {
		t.Fatal(err)
	}
	inter, err := root.NewIntermediate("Admin Test Intermediate")
	if err != nil {
		t.Fatal(err)
	}
	return &pki{root: root, inter: inter}
}

func (p *pki) leafPEM(t *testing.T, cn string) string {
	t.Helper()
	l, err := p.inter.NewLeaf(cn)
	if err != nil {
		t.Fatal(err)
	}
	return string(pkitest.CertPEM(l.Cert))
}

func x509Enrollment(id, certPEM string) *provisioning.IndividualEnrollment {
	return &provisioning.IndividualEnrollment{
		RegistrationID: id,
		Attestation: provisioning.AttestationMechanism{
			Type: provisioning.AttestationX509,
			X509: &provisioning.X509Attestation{ClientCertificates: &provisioning.X509Certificates{
				Primary: &provisioning.X509CertificateWithInfo{Certificate: certPEM},
			}},
		},
	}
}

func symmetricEnrollment(id string) *provisioning.IndividualEnrollment {
	return &provisioning.IndividualEnrollment{
		RegistrationID: id,
		Attestation: provisioning.AttestationMechanism{
			Type:         provisioning.AttestationSymmetricKey,
			SymmetricKey: &provisioning.SymmetricKeyAttestation{},
		},
	}
}

func x509Group(id, caPEM string) *provisioning.EnrollmentGroup {
	return &provisioning.EnrollmentGroup{
		EnrollmentGroupID: id,
		Attestation: provisioning.AttestationMechanism{
			Type: provisioning.AttestationX509,
			X509: &provisioning.X509Attestation{SigningCertificates: &provisioning.X509Certificates{
				Primary: &provisioning.X509CertificateWithInfo{Certificate: caPEM},
			}},
		},
	}
}

func caRefGroup(id, caName string) *provisioning.EnrollmentGroup {
	return &provisioning.EnrollmentGroup{
		EnrollmentGroupID: id,
		Attestation: provisioning.AttestationMechanism{
			Type: provisioning.AttestationX509,
			X509: &provisioning.X509Attestation{CAReferences: &provisioning.X509CAReferences{Primary: caName}},
		},
	}
}

func pemOf(ca *pkitest.CA) []byte { return pkitest.CertPEM(ca.Cert) }
