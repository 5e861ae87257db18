package x509attest_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"math/big"
	"testing"
	"time"

	"github.com/dpsbroker/dpsbroker/provisioning"
	"github.com/dpsbroker/dpsbroker/provisioning/pkitest"
	"github.com/dpsbroker/dpsbroker/provisioning/x509attest"
)

// ekCert issues an EK certificate the way TPM manufacturers do: empty
// subject, the TPM's identity in a critical subjectAltName directoryName,
// keyEncipherment, tcg-kp-EKCertificate.
func ekCert(t testing.TB, ca *pkitest.CA, pub crypto.PublicKey, mod ...func(*x509.Certificate)) *x509.Certificate {
	t.Helper()
	dirName, err := asn1.Marshal(pkix.Name{ExtraNames: []pkix.AttributeTypeAndValue{
		{Type: asn1.ObjectIdentifier{2, 23, 133, 2, 1}, Value: "id:44504253"}, // manufacturer
		{Type: asn1.ObjectIdentifier{2, 23, 133, 2, 2}, Value: "dpsbroker-test"},
		{Type: asn1.ObjectIdentifier{2, 23, 133, 2, 3}, Value: "id:00020008"},
	}}.ToRDNSequence())
	if err != nil {
		t.Fatal(err)
	}
	// GeneralNames { [4] directoryName }
	san, err := asn1.Marshal([]asn1.RawValue{{Class: asn1.ClassContextSpecific, Tag: 4, IsCompound: true, Bytes: dirName}})
	if err != nil {
		t.Fatal(err)
	}
	tpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageKeyEncipherment,
		UnknownExtKeyUsage:    []asn1.ObjectIdentifier{{2, 23, 133, 8, 1}},
		BasicConstraintsValid: true,
		ExtraExtensions:       []pkix.Extension{{Id: asn1.ObjectIdentifier{2, 5, 29, 17}, Critical: true, Value: san}},
	}
	for _, m := range mod {
		m(tpl)
	}
	der, err := x509.CreateCertificate(rand.Reader, tpl, ca.Cert, pub, ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// tpmGroup is a TPM enrollment group keyed by the manufacturer CA c.
func tpmGroup(id string, c *x509.Certificate, enabled bool) *provisioning.EnrollmentGroup {
	g := x509Group(id, c, enabled)
	g.Attestation.Type = provisioning.AttestationTPM
	return g
}

func TestDecideEKChain(t *testing.T) {
	root := pkitest.NewRoot(t, pkitest.Key(pkitest.ECDSAP256))
	mfr := root.Intermediate(t, "TPM Manufacturer CA", pkitest.Key(pkitest.ECDSAP256))
	other := root.Intermediate(t, "Other CA", pkitest.Key(pkitest.ECDSAP256))
	ekKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	good := ekCert(t, mfr, &ekKey.PublicKey)
	if len(good.UnhandledCriticalExtensions) != 1 {
		t.Fatalf("fixture: want the critical SAN unhandled by crypto/x509, got %v", good.UnhandledCriticalExtensions)
	}
	restrictedCA := root.Intermediate(t, "Restricted CA", pkitest.Key(pkitest.ECDSAP256), pkitest.ExtKeyUsages(x509.ExtKeyUsageServerAuth))
	ekCA := root.Intermediate(t, "EK-only CA", pkitest.Key(pkitest.ECDSAP256), pkitest.Template(func(c *x509.Certificate) {
		c.ExtKeyUsage = nil
		c.UnknownExtKeyUsage = []asn1.ObjectIdentifier{{2, 23, 133, 8, 1}}
	}))

	tests := []struct {
		name   string
		src    *fakeEnrollments
		chain  []*x509.Certificate
		reason x509attest.Reason
		group  string
	}{
		{name: "group on the issuing CA", src: newFake().putGroup(tpmGroup("mfr", mfr.Cert, true)),
			chain: []*x509.Certificate{good, mfr.Cert}, group: "mfr"},
		{name: "group on the root, intermediate presented", src: newFake().putGroup(tpmGroup("root", root.Cert, true)),
			chain: []*x509.Certificate{good, mfr.Cert}, group: "root"},
		{name: "issuing CA enrolled, not presented", src: newFake().putGroup(tpmGroup("mfr", mfr.Cert, true)),
			chain: []*x509.Certificate{good}, group: "mfr"},
		{name: "nearest group decides", src: newFake().putGroup(tpmGroup("root", root.Cert, true)).putGroup(tpmGroup("mfr", mfr.Cert, false)),
			chain: []*x509.Certificate{good, mfr.Cert}, reason: x509attest.ReasonGroupDisabled, group: "mfr"},
		{name: "disabled group", src: newFake().putGroup(tpmGroup("mfr", mfr.Cert, false)),
			chain: []*x509.Certificate{good, mfr.Cert}, reason: x509attest.ReasonGroupDisabled, group: "mfr"},
		{name: "an x509 group never admits an EK", src: newFake().putGroup(x509Group("mfr", mfr.Cert, true)),
			chain: []*x509.Certificate{good, mfr.Cert}, reason: x509attest.ReasonNoEnrollment},
		{name: "other CA's group", src: newFake().putGroup(tpmGroup("other", other.Cert, true)),
			chain: []*x509.Certificate{good, mfr.Cert}, reason: x509attest.ReasonNoEnrollment},
		{name: "CA allowing only tcg-kp-EKCertificate", src: newFake().putGroup(tpmGroup("ek", ekCA.Cert, true)),
			chain: []*x509.Certificate{ekCert(t, ekCA, &ekKey.PublicKey)}, group: "ek"},
		{name: "CA restricted to serverAuth", src: newFake().putGroup(tpmGroup("r", restrictedCA.Cert, true)),
			chain: []*x509.Certificate{ekCert(t, restrictedCA, &ekKey.PublicKey)}, reason: x509attest.ReasonKeyUsage},
		{name: "expired EK certificate", src: newFake().putGroup(tpmGroup("mfr", mfr.Cert, true)),
			chain: []*x509.Certificate{ekCert(t, mfr, &ekKey.PublicKey, func(c *x509.Certificate) {
				c.NotBefore, c.NotAfter = time.Now().Add(-48*time.Hour), time.Now().Add(-24*time.Hour)
			})}, reason: x509attest.ReasonExpired},
		{name: "another critical extension", src: newFake().putGroup(tpmGroup("mfr", mfr.Cert, true)),
			chain: []*x509.Certificate{ekCert(t, mfr, &ekKey.PublicKey, func(c *x509.Certificate) {
				c.ExtraExtensions = append(c.ExtraExtensions, pkixCritical())
			})}, reason: x509attest.ReasonCriticalExtension},
		{name: "EK certificate is a CA", src: newFake().putGroup(tpmGroup("mfr", mfr.Cert, true)),
			chain: []*x509.Certificate{ekCert(t, mfr, &ekKey.PublicKey, func(c *x509.Certificate) {
				c.IsCA, c.KeyUsage = true, x509.KeyUsageCertSign
			})}, reason: x509attest.ReasonLeafIsCA},
		{name: "self-signed", src: newFake().putGroup(tpmGroup("mfr", mfr.Cert, true)),
			chain: []*x509.Certificate{pkitest.SelfSigned(t, "ek", pkitest.Key(pkitest.ECDSAP256)).Cert}, reason: x509attest.ReasonSelfSignedLeaf},
		{name: "nothing presented", src: newFake(), chain: nil, reason: x509attest.ReasonMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := x509attest.New(tt.src, x509attest.Options{})
			d, err := e.DecideEKChain(context.Background(), "ek-device", tt.chain)
			if err != nil {
				t.Fatal(err)
			}
			want(t, d, tt.reason)
			if d.Explanation == "" {
				t.Error("no explanation")
			}
			if got := groupID(d); got != tt.group {
				t.Errorf("group = %q, want %q", got, tt.group)
			}
			if d.Outcome == x509attest.Provision && (d.RegistrationID != "ek-device" || d.SigningCertificate == nil || d.Certificate == nil) {
				t.Errorf("decision incomplete: %+v", d)
			}
		})
	}

	t.Run("caller's certificate untouched", func(t *testing.T) {
		e := x509attest.New(newFake().putGroup(tpmGroup("mfr", mfr.Cert, true)), x509attest.Options{})
		if _, err := e.DecideEKChain(context.Background(), "d", []*x509.Certificate{good}); err != nil {
			t.Fatal(err)
		}
		if len(good.UnhandledCriticalExtensions) != 1 {
			t.Error("DecideEKChain modified the certificate")
		}
	})

	t.Run("TPM groups never admit an X.509 device", func(t *testing.T) {
		leaf := mfr.Leaf(t, "x509-device", pkitest.Key(pkitest.ECDSAP256))
		e := x509attest.New(newFake().putGroup(tpmGroup("mfr", mfr.Cert, true)), x509attest.Options{})
		want(t, decide(t, e, leaf.Chain), x509attest.ReasonNoEnrollment)
	})

	t.Run("caReferences", func(t *testing.T) {
		src := newFake().putCA(&provisioning.CACertificate{Name: "mfr-ca", Certificate: pemString(mfr.Cert), IsVerified: true})
		g := caRefGroup("by-ref", "mfr-ca", true)
		g.Attestation.Type = provisioning.AttestationTPM
		src.putGroup(g)
		d, err := x509attest.New(src, x509attest.Options{}).DecideEKChain(context.Background(), "d", []*x509.Certificate{good})
		if err != nil {
			t.Fatal(err)
		}
		want(t, d, "")
	})

	t.Run("store error fails closed", func(t *testing.T) {
		src := newFake()
		src.err = errNotFound // any error of ListEnrollmentGroups
		if _, err := x509attest.New(src, x509attest.Options{}).DecideEKChain(context.Background(), "d", []*x509.Certificate{good}); err == nil {
			t.Fatal("no error")
		}
	})
}

func groupID(d *x509attest.Decision) string {
	if d.Group == nil {
		return ""
	}
	return d.Group.EnrollmentGroupID
}

func pkixCritical() pkix.Extension {
	return pkix.Extension{Id: asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 55555, 1}, Critical: true, Value: []byte{0x05, 0x00}}
}
