package provisioning

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"math/big"
	"strings"
	"sync"
	"testing"
	"time"
)

// testKey is shared by every test certificate: key generation dominates
// the cost of these tests and the keys protect nothing.
var testKey = sync.OnceValue(func() *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	return k
})

type certOpts struct {
	cn       string
	isCA     bool
	noBC     bool // omit basic constraints entirely
	keyUsage x509.KeyUsage
	parent   *x509.Certificate
}

// newCert issues a certificate (self-signed when o.parent is nil).
func newCert(t testing.TB, o certOpts) *x509.Certificate {
	t.Helper()
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: o.cn, Organization: []string{"dpsbroker test"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		BasicConstraintsValid: !o.noBC,
		IsCA:                  o.isCA,
		KeyUsage:              o.keyUsage,
	}
	if o.keyUsage == 0 {
		if o.isCA {
			tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature
		} else {
			tmpl.KeyUsage = x509.KeyUsageDigitalSignature
			tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
		}
	}
	parent := o.parent
	if parent == nil {
		parent = tmpl
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &testKey().PublicKey, testKey())
	if err != nil {
		t.Fatalf("create certificate: %v", err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("parse certificate: %v", err)
	}
	return c
}

func pemOf(c *x509.Certificate) string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}))
}

func b64Of(c *x509.Certificate) string { return base64.StdEncoding.EncodeToString(c.Raw) }

func TestParseCertificate(t *testing.T) {
	ca := newCert(t, certOpts{cn: "root", isCA: true})
	leaf := newCert(t, certOpts{cn: "dev1", parent: ca})
	keyPEM := "-----BEGIN PRIVATE KEY-----\nU0VDUkVULUtFWS1NQVRFUklBTA==\n-----END PRIVATE KEY-----\n"
	b64 := b64Of(leaf)

	tests := []struct {
		name    string
		in      string
		wantCN  string
		wantErr string
	}{
		{name: "pem", in: pemOf(leaf), wantCN: "dev1"},
		{name: "pem with surrounding space", in: "\n  " + pemOf(leaf) + "\n\n", wantCN: "dev1"},
		{name: "pem with CRLF", in: strings.ReplaceAll(pemOf(leaf), "\n", "\r\n"), wantCN: "dev1"},
		{name: "base64 der", in: b64, wantCN: "dev1"},
		{name: "base64 der wrapped", in: b64[:64] + "\n" + b64[64:], wantCN: "dev1"},
		{name: "empty", in: "  \n", wantErr: "empty"},
		{name: "two pem certificates", in: pemOf(leaf) + pemOf(ca), wantErr: "contains 2 certificates"},
		{name: "key block", in: keyPEM, wantErr: `type "PRIVATE KEY"`},
		{name: "certificate then key", in: pemOf(leaf) + keyPEM, wantErr: `type "PRIVATE KEY"`},
		{name: "text before pem", in: "Bag Attributes\n" + pemOf(leaf), wantErr: "text before"},
		{name: "text after pem", in: pemOf(leaf) + "trailing", wantErr: "text after"},
		{name: "truncated pem", in: pemOf(leaf)[:100], wantErr: "malformed PEM"},
		{name: "not base64", in: "hello world!", wantErr: "neither PEM nor valid base64"},
		{name: "base64 of garbage", in: base64.StdEncoding.EncodeToString([]byte("not a certificate")), wantErr: "x509"},
		{name: "two der certificates", in: base64.StdEncoding.EncodeToString(append(append([]byte{}, leaf.Raw...), ca.Raw...)), wantErr: "contains 2 certificates"},
		{name: "too long", in: strings.Repeat("A", MaxCertificateLen+1), wantErr: "the limit is"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ParseCertificate(tt.in)
			if tt.wantErr != "" {
				if err == nil {
					t.Fatalf("got no error, want %q", tt.wantErr)
				}
				if !errors.Is(err, ErrBadCertificate) {
					t.Errorf("error %v does not wrap ErrBadCertificate", err)
				}
				if !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("error %q does not contain %q", err, tt.wantErr)
				}
				if strings.Contains(err.Error(), "U0VDUkVU") {
					t.Errorf("error echoes key material: %q", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if c.Subject.CommonName != tt.wantCN {
				t.Errorf("CN = %q, want %q", c.Subject.CommonName, tt.wantCN)
			}
		})
	}
}

func TestThumbprint(t *testing.T) {
	c := newCert(t, certOpts{cn: "dev1"})
	if got, want := Thumbprint(c), sha256.Sum256(c.Raw); got != want {
		t.Fatalf("Thumbprint = %x, want %x", got, want)
	}
	if h := ThumbprintHex(Thumbprint(c)); len(h) != 64 || strings.ToUpper(h) != h {
		t.Fatalf("ThumbprintHex = %q, want 64 upper-case hex digits", h)
	}
}

func TestFillInfoAndThumbprints(t *testing.T) {
	ca := newCert(t, certOpts{cn: "root", isCA: true})
	ca2 := newCert(t, certOpts{cn: "root2", isCA: true})
	leaf := newCert(t, certOpts{cn: "dev1", parent: ca})
	leaf2 := newCert(t, certOpts{cn: "dev1", parent: ca2})

	e := &IndividualEnrollment{RegistrationID: "dev1", Attestation: AttestationMechanism{
		Type: AttestationX509,
		X509: &X509Attestation{ClientCertificates: &X509Certificates{
			Primary:   &X509CertificateWithInfo{Certificate: pemOf(leaf)},
			Secondary: &X509CertificateWithInfo{Certificate: b64Of(leaf2)},
		}},
	}}
	e.FillInfo()
	p := e.Attestation.X509.ClientCertificates.Primary.Info
	s := e.Attestation.X509.ClientCertificates.Secondary.Info
	if p == nil || s == nil {
		t.Fatalf("info not filled: primary %v secondary %v", p, s)
	}
	if p.SHA256Thumbprint != ThumbprintHex(Thumbprint(leaf)) || p.SubjectName != leaf.Subject.String() {
		t.Errorf("primary info = %+v, does not describe the primary certificate", p)
	}
	if s.SHA256Thumbprint != ThumbprintHex(Thumbprint(leaf2)) || s.IssuerName != ca2.Subject.String() {
		t.Errorf("secondary info = %+v, does not describe the secondary certificate", s)
	}
	tps := e.ClientCertificateThumbprints()
	if len(tps) != 2 || tps[0] != Thumbprint(leaf) || tps[1] != Thumbprint(leaf2) {
		t.Errorf("ClientCertificateThumbprints = %x, want primary then secondary", tps)
	}

	// A certificate replaced by garbage loses its stale info.
	e.Attestation.X509.ClientCertificates.Primary.Certificate = "garbage"
	e.FillInfo()
	if e.Attestation.X509.ClientCertificates.Primary.Info != nil {
		t.Errorf("info kept for an unparseable certificate")
	}
	if got := e.ClientCertificateThumbprints(); len(got) != 1 || got[0] != Thumbprint(leaf2) {
		t.Errorf("ClientCertificateThumbprints with a bad primary = %x, want only the secondary", got)
	}

	g := &EnrollmentGroup{EnrollmentGroupID: "g1", Attestation: AttestationMechanism{
		Type: AttestationX509,
		X509: &X509Attestation{SigningCertificates: &X509Certificates{Primary: &X509CertificateWithInfo{Certificate: pemOf(ca)}}},
	}}
	g.FillInfo()
	if i := g.Attestation.X509.SigningCertificates.Primary.Info; i == nil || i.SubjectName != ca.Subject.String() {
		t.Errorf("group info = %+v", i)
	}
	if got := g.CertificateThumbprints(); len(got) != 1 || got[0] != Thumbprint(ca) {
		t.Errorf("CertificateThumbprints = %x", got)
	}
	if got := g.CAReferenceNames(); got != nil {
		t.Errorf("CAReferenceNames without references = %v", got)
	}

	ref := &EnrollmentGroup{Attestation: AttestationMechanism{Type: AttestationX509,
		X509: &X509Attestation{CAReferences: &X509CAReferences{Primary: "ca-a", Secondary: "ca-b"}}}}
	if got := ref.CAReferenceNames(); len(got) != 2 || got[0] != "ca-a" || got[1] != "ca-b" {
		t.Errorf("CAReferenceNames = %v", got)
	}
	if got := ref.CertificateThumbprints(); got != nil {
		t.Errorf("CertificateThumbprints of a reference group = %x", got)
	}
	ref.FillInfo() // no certificates: must not panic

	sym := &EnrollmentGroup{Attestation: AttestationMechanism{Type: AttestationSymmetricKey}}
	sym.FillInfo()
	if sym.CertificateThumbprints() != nil || sym.CAReferenceNames() != nil {
		t.Errorf("symmetric-key group has certificate data")
	}
	(&IndividualEnrollment{}).FillInfo()
	if (&IndividualEnrollment{}).ClientCertificateThumbprints() != nil {
		t.Errorf("empty enrollment has thumbprints")
	}
}

func TestCACertificateFillInfo(t *testing.T) {
	ca := newCert(t, certOpts{cn: "root", isCA: true})
	c := &CACertificate{Name: "root", Certificate: pemOf(ca)}
	if err := c.FillInfo(); err != nil {
		t.Fatal(err)
	}
	if c.Subject != ca.Subject.String() || c.Thumbprint != ThumbprintHex(Thumbprint(ca)) || c.Expiry == nil || !c.Expiry.Equal(ca.NotAfter) {
		t.Errorf("FillInfo = %+v", c)
	}
	bad := &CACertificate{Name: "x", Certificate: "nope", Subject: "kept"}
	if err := bad.FillInfo(); err == nil || bad.Subject != "kept" {
		t.Errorf("FillInfo of a bad certificate: err %v, subject %q", err, bad.Subject)
	}
}
