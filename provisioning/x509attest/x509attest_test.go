package x509attest_test

import (
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dpsbroker/dpsbroker/provisioning"
	"github.com/dpsbroker/dpsbroker/provisioning/pkitest"
	"github.com/dpsbroker/dpsbroker/provisioning/wire"
	"github.com/dpsbroker/dpsbroker/provisioning/x509attest"
)

func decide(t testing.TB, e *x509attest.Evaluator, chain []*x509.Certificate) *x509attest.Decision {
	t.Helper()
	d, err := e.Decide(context.Background(), chain)
	if err != nil {
		t.Fatalf("Decide: %v", err)
	}
	if d.Explanation == "" {
		t.Fatal("decision without explanation")
	}
	return d
}

// want checks the outcome: reason "" means provisioned.
func want(t *testing.T, d *x509attest.Decision, reason x509attest.Reason) {
	t.Helper()
	switch {
	case reason == "" && d.Outcome != x509attest.Provision:
		t.Fatalf("refused (%s): %s; want provisioned", d.Reason, d.Explanation)
	case reason != "" && d.Outcome != x509attest.Refuse:
		t.Fatalf("provisioned: %s; want refused with %s", d.Explanation, reason)
	case reason != "" && d.Reason != reason:
		t.Fatalf("refused with %s (%s); want %s", d.Reason, d.Explanation, reason)
	case reason != "" && d.ErrorCode != x509attest.ErrorCodeUnauthorized:
		t.Fatalf("error code %d", d.ErrorCode)
	}
}

// seed is the five-device hierarchy of testdata/seed.
type seed struct {
	root, a, b *x509.Certificate
	devices    map[string][]*x509.Certificate // registration ID -> presented chain
}

func loadSeed(t *testing.T) *seed {
	t.Helper()
	dir := filepath.Join("..", "..", "testdata", "seed")
	one := func(name string) []*x509.Certificate {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatalf("seed fixture (regenerate with go run ./testdata/seed/gen.go): %v", err)
		}
		certs, err := pkitest.ParseCertsPEM(data)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return certs
	}
	s := &seed{root: one("root.pem")[0], a: one("intermediate-A.pem")[0], b: one("intermediate-B.pem")[0], devices: map[string][]*x509.Certificate{}}
	for _, id := range []string{"device-1", "device-2", "device-3", "device-4", "device-5"} {
		s.devices[id] = one(id + ".pem")
	}
	return s
}

// TestSeedScenario is the story of x509-attestation.txt: enable the root,
// then disable B, then disable device 3.
func TestSeedScenario(t *testing.T) {
	s := loadSeed(t)
	store := newFake()
	e := x509attest.New(store, x509attest.Options{})
	stages := []struct {
		name    string
		apply   func()
		refused map[string]x509attest.Reason
		groupOf map[string]string // group that decided, for provisioned devices
	}{
		{
			name:    "group on the root admits all five",
			apply:   func() { store.putGroup(x509Group("root", s.root, true)) },
			refused: map[string]x509attest.Reason{},
			groupOf: map[string]string{"device-1": "root", "device-4": "root"},
		},
		{
			name:    "disabled group on B refuses 4 and 5",
			apply:   func() { store.putGroup(x509Group("compromised-b", s.b, false)) },
			refused: map[string]x509attest.Reason{"device-4": x509attest.ReasonGroupDisabled, "device-5": x509attest.ReasonGroupDisabled},
			groupOf: map[string]string{"device-1": "root", "device-4": "compromised-b"},
		},
		{
			name: "disabled individual enrollment refuses device 3",
			apply: func() {
				store.putEnrollment(x509Individual("device-3", s.devices["device-3"][0], false))
			},
			refused: map[string]x509attest.Reason{
				"device-3": x509attest.ReasonIndividualDisabled,
				"device-4": x509attest.ReasonGroupDisabled, "device-5": x509attest.ReasonGroupDisabled,
			},
			groupOf: map[string]string{"device-2": "root"},
		},
	}
	for _, st := range stages {
		st.apply()
		t.Run(st.name, func(t *testing.T) {
			for id, chain := range s.devices {
				d := decide(t, e, chain)
				want(t, d, st.refused[id])
				if d.RegistrationID != id || d.Certificate == nil || d.Certificate.SubjectName != "CN="+id {
					t.Fatalf("%s: registration %q certificate %+v", id, d.RegistrationID, d.Certificate)
				}
				if g, ok := st.groupOf[id]; ok && (d.Group == nil || d.Group.EnrollmentGroupID != g) {
					t.Fatalf("%s decided by %+v, want group %s (%s)", id, d.Group, g, d.Explanation)
				}
				if d.Outcome == x509attest.Provision && (d.DeviceID != id || d.SigningCertificate == nil) {
					t.Fatalf("%s: device ID %q signing %+v", id, d.DeviceID, d.SigningCertificate)
				}
			}
		})
	}
}

func TestPrecedence(t *testing.T) {
	root := pkitest.NewRoot(t)
	inter := root.Intermediate(t, "factory")
	dev := inter.Leaf(t, "device-1")
	other := inter.Leaf(t, "device-1") // same registration ID, another certificate
	self := pkitest.SelfSigned(t, "lonely-1")
	foreign := pkitest.NewRoot(t).Intermediate(t, "elsewhere").Leaf(t, "device-9")

	tests := []struct {
		name   string
		store  *fakeEnrollments
		chain  []*x509.Certificate
		reason x509attest.Reason
		check  func(*testing.T, *x509attest.Decision)
	}{
		{
			name: "individual beats disabled group",
			store: newFake().putGroup(x509Group("g", root.Cert, false)).
				putEnrollment(x509Individual("device-1", dev.Cert, true)),
			chain: dev.Chain,
			check: func(t *testing.T, d *x509attest.Decision) {
				if d.Enrollment == nil || d.Group != nil || d.SigningCertificate != nil {
					t.Fatalf("decided by %+v / %+v", d.Enrollment, d.Group)
				}
			},
		},
		{
			name: "disabled individual beats enabled group",
			store: newFake().putGroup(x509Group("g", root.Cert, true)).
				putEnrollment(x509Individual("device-1", dev.Cert, false)),
			chain: dev.Chain, reason: x509attest.ReasonIndividualDisabled,
		},
		{
			name: "disabled symmetric-key individual takes a device out of a group",
			store: newFake().putGroup(x509Group("g", root.Cert, true)).
				putEnrollment(symmetricIndividual("device-1", false)),
			chain: dev.Chain, reason: x509attest.ReasonIndividualDisabled,
		},
		{
			name: "enabled individual of another type does not admit an x509 device",
			store: newFake().putGroup(x509Group("g", root.Cert, true)).
				putEnrollment(symmetricIndividual("device-1", true)),
			chain: dev.Chain, reason: x509attest.ReasonCertificateMismatch,
		},
		{
			name: "individual with another certificate refuses, groups are not tried",
			store: newFake().putGroup(x509Group("g", root.Cert, true)).
				putEnrollment(x509Individual("device-1", other.Cert, true)),
			chain: dev.Chain, reason: x509attest.ReasonCertificateMismatch,
		},
		{
			name:  "registration IDs are case-insensitive",
			store: newFake().putEnrollment(x509Individual("DEVICE-1", dev.Cert, true)),
			chain: dev.Chain,
		},
		{
			name: "individual device ID is used",
			store: newFake().putEnrollment(func() *provisioning.IndividualEnrollment {
				e := x509Individual("device-1", dev.Cert, true)
				e.DeviceID = "thermostat-7"
				return e
			}()),
			chain: dev.Chain,
			check: func(t *testing.T, d *x509attest.Decision) {
				if d.DeviceID != "thermostat-7" {
					t.Fatalf("device ID %q", d.DeviceID)
				}
			},
		},
		{
			name: "secondary certificate matches",
			store: newFake().putEnrollment(func() *provisioning.IndividualEnrollment {
				e := x509Individual("device-1", other.Cert, true)
				e.Attestation.X509.ClientCertificates.Secondary = &provisioning.X509CertificateWithInfo{Certificate: pemString(dev.Cert)}
				return e
			}()),
			chain: dev.Chain,
		},
		{
			name: "group on the intermediate beats an enabled group on the root",
			store: newFake().putGroup(x509Group("a-root", root.Cert, true)).
				putGroup(x509Group("z-factory", inter.Cert, false)),
			chain: dev.Chain, reason: x509attest.ReasonGroupDisabled,
			check: func(t *testing.T, d *x509attest.Decision) {
				if d.Group.EnrollmentGroupID != "z-factory" {
					t.Fatalf("decided by %s", d.Group.EnrollmentGroupID)
				}
			},
		},
		{
			name: "enabled group on the intermediate beats a disabled root",
			store: newFake().putGroup(x509Group("root", root.Cert, false)).
				putGroup(x509Group("factory", inter.Cert, true)),
			chain: dev.Chain,
			check: func(t *testing.T, d *x509attest.Decision) {
				if d.Group.EnrollmentGroupID != "factory" || d.SigningCertificate.SubjectName != "CN=factory" {
					t.Fatalf("decided by %s with %+v", d.Group.EnrollmentGroupID, d.SigningCertificate)
				}
			},
		},
		{
			name:  "a disabled group wins over an enabled one on the same certificate",
			store: newFake().putGroup(x509Group("a", root.Cert, true)).putGroup(x509Group("b", root.Cert, false)),
			chain: dev.Chain, reason: x509attest.ReasonGroupDisabled,
		},
		{
			name:  "unknown chain",
			store: newFake().putGroup(x509Group("g", root.Cert, true)),
			chain: foreign.Chain, reason: x509attest.ReasonNoEnrollment,
		},
		{
			name:  "no enrollments at all",
			store: newFake(),
			chain: dev.Chain, reason: x509attest.ReasonNoEnrollment,
		},
		{
			name: "symmetric-key groups are ignored",
			store: newFake().putGroup(&provisioning.EnrollmentGroup{
				EnrollmentGroupID: "sym",
				Attestation:       provisioning.AttestationMechanism{Type: provisioning.AttestationSymmetricKey},
			}),
			chain: dev.Chain, reason: x509attest.ReasonNoEnrollment,
		},
		{
			name:  "self-signed leaf with an individual enrollment",
			store: newFake().putEnrollment(x509Individual("lonely-1", self.Cert, true)),
			chain: self.Chain,
		},
		{
			name:  "self-signed leaf without one",
			store: newFake().putGroup(x509Group("g", self.Cert, true)),
			chain: self.Chain, reason: x509attest.ReasonSelfSignedLeaf,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := decide(t, x509attest.New(tc.store, x509attest.Options{}), tc.chain)
			want(t, d, tc.reason)
			if tc.check != nil {
				tc.check(t, d)
			}
		})
	}
}

func TestCertificateDefects(t *testing.T) {
	root := pkitest.NewRoot(t)
	inter := root.Intermediate(t, "factory")
	leaf := func(opts ...pkitest.Option) []*x509.Certificate { return inter.Leaf(t, "device-1", opts...).Chain }
	under := func(ca *pkitest.CA, opts ...pkitest.Option) []*x509.Certificate {
		return ca.Leaf(t, "device-1", opts...).Chain
	}
	manySANs := make([]string, 400)
	for i := range manySANs {
		manySANs[i] = strings.Repeat("x", 20) + ".example.com"
	}
	deep := root
	for range 8 {
		deep = deep.Intermediate(t, "level")
	}
	tests := []struct {
		name   string
		chain  []*x509.Certificate
		reason x509attest.Reason
	}{
		{"healthy P-256", leaf(), ""},
		{"RSA-2048 leaf", leaf(pkitest.Key(pkitest.RSA2048)), ""},
		{"P-384 leaf", leaf(pkitest.Key(pkitest.ECDSAP384)), ""},
		{"Ed25519 leaf", leaf(pkitest.Key(pkitest.Ed25519)), ""},
		{"RSA CA", under(root.Intermediate(t, "rsa", pkitest.Key(pkitest.RSA2048))), ""},
		{"expired leaf", leaf(pkitest.Expired()), x509attest.ReasonExpired},
		{"not yet valid leaf", leaf(pkitest.NotYetValid()), x509attest.ReasonNotYetValid},
		{"expired intermediate", under(root.Intermediate(t, "old", pkitest.Expired())), x509attest.ReasonExpired},
		{"not yet valid intermediate", under(root.Intermediate(t, "new", pkitest.NotYetValid())), x509attest.ReasonNotYetValid},
		{"CA leaf", leaf(pkitest.AsCA(true)), x509attest.ReasonLeafIsCA},
		{"server auth only", leaf(pkitest.ServerAuthOnly()), x509attest.ReasonMissingClientAuth},
		{"no EKU is any usage", leaf(pkitest.ExtKeyUsages()), ""},
		{"key usage without digitalSignature", leaf(pkitest.KeyUsage(x509.KeyUsageKeyEncipherment)), x509attest.ReasonKeyUsage},
		{"RSA-1024 leaf", leaf(pkitest.Key(pkitest.RSA1024)), x509attest.ReasonWeakKey},
		{"RSA-1024 CA", under(root.Intermediate(t, "weak", pkitest.Key(pkitest.RSA1024))), x509attest.ReasonWeakKey},
		{"SHA-1 leaf", leaf(pkitest.SHA1Signature()), x509attest.ReasonInsecureSignature},
		{"SHA-1 intermediate", under(root.Intermediate(t, "sha1", pkitest.SHA1Signature())), x509attest.ReasonInsecureSignature},
		{"leaf signed by the wrong key", leaf(pkitest.SignedByWrongKey()), x509attest.ReasonBadSignature},
		{"intermediate signed by the wrong key", under(root.Intermediate(t, "forged", pkitest.SignedByWrongKey())), x509attest.ReasonBadSignature},
		{"path length exceeded", under(root.Intermediate(t, "pl0", pkitest.MaxPathLen(0)).Intermediate(t, "below")), x509attest.ReasonPathLength},
		{"path length respected", under(root.Intermediate(t, "pl1", pkitest.MaxPathLen(1)).Intermediate(t, "below")), ""},
		{"path length zero issues leaves", under(root.Intermediate(t, "pl0b", pkitest.MaxPathLen(0))), ""},
		{"name constraints violated", under(root.Intermediate(t, "nc", pkitest.PermittedDNSDomains("example.com")), pkitest.DNSNames("device.example.org")), x509attest.ReasonNameConstraints},
		{"name constraints respected", under(root.Intermediate(t, "nc2", pkitest.PermittedDNSDomains("example.com")), pkitest.DNSNames("device.example.com")), ""},
		{"issuer not a CA", under(root.Intermediate(t, "notca", pkitest.AsCA(false))), x509attest.ReasonIssuerNotCA},
		{"CA without keyCertSign", under(root.Intermediate(t, "nosign", pkitest.KeyUsage(x509.KeyUsageDigitalSignature))), x509attest.ReasonKeyUsage},
		{"CA restricted to serverAuth", under(root.Intermediate(t, "srv", pkitest.ServerAuthOnly())), x509attest.ReasonMissingClientAuth},
		{"unknown critical extension on the leaf", leaf(pkitest.UnknownCriticalExtension()), x509attest.ReasonCriticalExtension},
		{"unknown critical extension on a CA", under(root.Intermediate(t, "crit", pkitest.UnknownCriticalExtension())), x509attest.ReasonCriticalExtension},
		{"bad registration ID", inter.Leaf(t, "bad id!").Chain, x509attest.ReasonBadRegistrationID},
		{"registration ID over 64 characters", inter.Leaf(t, strings.Repeat("a", 65)).Chain, x509attest.ReasonBadRegistrationID},
		{"certificate too large", leaf(pkitest.DNSNames(manySANs...)), x509attest.ReasonCertificateTooLarge},
		{"more certificates than the maximum", under(deep), x509attest.ReasonChainTooLong},
		{"no certificate", nil, x509attest.ReasonMalformed},
	}
	store := newFake().putGroup(x509Group("root", root.Cert, true))
	e := x509attest.New(store, x509attest.Options{})
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			want(t, decide(t, e, tc.chain), tc.reason)
		})
	}
}

func TestClockSkew(t *testing.T) {
	root := pkitest.NewRoot(t)
	now := time.Now()
	// Valid from 30 s in the future: inside the default one-minute skew.
	soon := root.Leaf(t, "device-1", pkitest.Validity(now.Add(30*time.Second), now.Add(time.Hour)))
	store := newFake().putGroup(x509Group("root", root.Cert, true))
	want(t, decide(t, x509attest.New(store, x509attest.Options{}), soon.Chain), "")
	strict := x509attest.New(store, x509attest.Options{ClockSkew: -1})
	want(t, decide(t, strict, soon.Chain), x509attest.ReasonNotYetValid)
	later := x509attest.New(store, x509attest.Options{Now: func() time.Time { return now.Add(2 * time.Hour) }})
	want(t, decide(t, later, soon.Chain), x509attest.ReasonExpired)
}

func TestChainBuilding(t *testing.T) {
	root := pkitest.NewRoot(t)
	a := root.Intermediate(t, "A")
	a2 := a.Intermediate(t, "A2")
	a3 := a2.Intermediate(t, "A3")
	dev := a3.Leaf(t, "device-1")
	// Chain is [leaf, A3, A2, A].
	tests := []struct {
		name   string
		group  *x509.Certificate
		chain  []*x509.Certificate
		reason x509attest.Reason
	}{
		{"as presented", root.Cert, dev.Chain, ""},
		{"shuffled intermediates", root.Cert, []*x509.Certificate{dev.Cert, dev.Chain[3], dev.Chain[1], dev.Chain[2]}, ""},
		{"reversed intermediates", root.Cert, []*x509.Certificate{dev.Cert, dev.Chain[3], dev.Chain[2], dev.Chain[1]}, ""},
		{"root presented too", root.Cert, append(dev.Chain[:4:4], root.Cert), ""},
		{"enrolled issuer omitted", a3.Cert, []*x509.Certificate{dev.Cert}, ""},
		{"enrolled middle intermediate omitted", a2.Cert, []*x509.Certificate{dev.Cert, dev.Chain[1]}, ""},
		{"unenrolled intermediate omitted", root.Cert, []*x509.Certificate{dev.Cert, dev.Chain[1], dev.Chain[3]}, x509attest.ReasonNoEnrollment},
		{"leaf alone under a root group", root.Cert, []*x509.Certificate{dev.Cert}, x509attest.ReasonNoEnrollment},
		{"duplicated intermediates", root.Cert, []*x509.Certificate{dev.Cert, dev.Chain[1], dev.Chain[1], dev.Chain[2], dev.Chain[3]}, ""},
		{"unrelated extra certificate", root.Cert, append(dev.Chain[:4:4], pkitest.NewRoot(t).Cert), ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := x509attest.New(newFake().putGroup(x509Group("g", tc.group, true)), x509attest.Options{})
			d := decide(t, e, tc.chain)
			want(t, d, tc.reason)
			// The second decision runs on cached links and must agree.
			want(t, decide(t, e, tc.chain), tc.reason)
		})
	}
}

func TestCAReferences(t *testing.T) {
	root := pkitest.NewRoot(t)
	inter := root.Intermediate(t, "factory")
	dev := inter.Leaf(t, "device-1")
	ca := func(verified bool) *provisioning.CACertificate {
		return &provisioning.CACertificate{Name: "factory-ca", Certificate: pemString(inter.Cert), IsVerified: verified}
	}
	tests := []struct {
		name   string
		store  *fakeEnrollments
		chain  []*x509.Certificate
		reason x509attest.Reason
	}{
		{"verified CA certificate", newFake().putGroup(caRefGroup("g", "factory-ca", true)).putCA(ca(true)), dev.Chain, ""},
		{"anchors a device that omits it", newFake().putGroup(caRefGroup("g", "factory-ca", true)).putCA(ca(true)), dev.Chain[:1], ""},
		{"disabled group", newFake().putGroup(caRefGroup("g", "factory-ca", false)).putCA(ca(true)), dev.Chain, x509attest.ReasonGroupDisabled},
		{"unverified CA certificate anchors nothing", newFake().putGroup(caRefGroup("g", "factory-ca", true)).putCA(ca(false)), dev.Chain, x509attest.ReasonNoEnrollment},
		{"missing CA certificate", newFake().putGroup(caRefGroup("g", "factory-ca", true)), dev.Chain, x509attest.ReasonNoEnrollment},
		{"CA reference below a root group decides first", newFake().putGroup(x509Group("a-root", root.Cert, true)).
			putGroup(caRefGroup("b-factory", "factory-ca", false)).putCA(ca(true)), dev.Chain, x509attest.ReasonGroupDisabled},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			want(t, decide(t, x509attest.New(tc.store, x509attest.Options{}), tc.chain), tc.reason)
		})
	}
}

// TestStatusIsReadFresh: caches hold signatures, never enrollment status.
func TestStatusIsReadFresh(t *testing.T) {
	root := pkitest.NewRoot(t)
	dev := root.Intermediate(t, "A").Leaf(t, "device-1")
	store := newFake().putGroup(x509Group("g", root.Cert, true))
	e := x509attest.New(store, x509attest.Options{})
	want(t, decide(t, e, dev.Chain), "")
	store.putGroup(x509Group("g", root.Cert, false))
	want(t, decide(t, e, dev.Chain), x509attest.ReasonGroupDisabled)
	store.putGroup(x509Group("g", root.Cert, true))
	want(t, decide(t, e, dev.Chain), "")
	store.putEnrollment(symmetricIndividual("device-1", false))
	want(t, decide(t, e, dev.Chain), x509attest.ReasonIndividualDisabled)

	// A CA certificate replaced under the same name stops anchoring at once.
	other := pkitest.NewRoot(t)
	caStore := newFake().putGroup(caRefGroup("g", "ca", true)).
		putCA(&provisioning.CACertificate{Name: "ca", Certificate: pemString(root.Cert), IsVerified: true})
	ce := x509attest.New(caStore, x509attest.Options{})
	want(t, decide(t, ce, dev.Chain), "")
	caStore.putCA(&provisioning.CACertificate{Name: "ca", Certificate: pemString(other.Cert), IsVerified: true})
	want(t, decide(t, ce, dev.Chain), x509attest.ReasonNoEnrollment)
}

func TestStoreErrorFailsClosed(t *testing.T) {
	root := pkitest.NewRoot(t)
	dev := root.Intermediate(t, "A").Leaf(t, "device-1")
	boom := errors.New("connection refused")
	down := newFake().putGroup(x509Group("g", root.Cert, true))
	down.err = boom
	caDown := newFake().putGroup(caRefGroup("g", "ca", true))
	caDown.caErr = boom
	for name, store := range map[string]*fakeEnrollments{"enrollments": down, "CA certificates": caDown} {
		t.Run(name, func(t *testing.T) {
			d, err := x509attest.New(store, x509attest.Options{}).Decide(context.Background(), dev.Chain)
			if !errors.Is(err, boom) || d != nil {
				t.Fatalf("Decide = %+v, %v; want nil and the store error", d, err)
			}
		})
	}
}

func TestDecisionErr(t *testing.T) {
	root := pkitest.NewRoot(t)
	dev := root.Leaf(t, "device-1", pkitest.Expired())
	d := decide(t, x509attest.New(newFake(), x509attest.Options{}), dev.Chain)
	var re *x509attest.RefusalError
	if err := d.Err(); !errors.As(err, &re) || re.Reason != x509attest.ReasonExpired || re.Code != 401002 {
		t.Fatalf("Err() = %v", err)
	}
	ok := &x509attest.Decision{Outcome: x509attest.Provision}
	if ok.Err() != nil {
		t.Fatal("provisioned decision has an error")
	}
	if (&x509attest.Decision{}).Err() == nil {
		t.Fatal("the zero Decision must refuse")
	}
}

func TestConcurrentDecisions(t *testing.T) {
	root := pkitest.NewRoot(t)
	a := root.Intermediate(t, "A")
	b := root.Intermediate(t, "B")
	store := newFake().putGroup(x509Group("root", root.Cert, true)).putGroup(x509Group("b", b.Cert, false))
	e := x509attest.New(store, x509attest.Options{CacheSize: 8}) // tiny: exercise eviction
	var leaves []*pkitest.Leaf
	for range 8 {
		leaves = append(leaves, a.Leaf(t, "device-a"), b.Leaf(t, "device-b"))
	}
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 50 {
				l := leaves[(w+i)%len(leaves)]
				d, err := e.Decide(context.Background(), l.Chain)
				if err != nil {
					t.Error(err)
					return
				}
				wantProvision := l.Cert.Subject.CommonName == "device-a"
				if (d.Outcome == x509attest.Provision) != wantProvision {
					t.Errorf("%s: %s (%s)", l.Cert.Subject.CommonName, d.Outcome, d.Explanation)
					return
				}
			}
		}()
	}
	wg.Wait()
}

// TestCertificateInfoMatchesWire: the decision's own rendering of the leaf
// description must equal the shared one.
func TestCertificateInfoMatchesWire(t *testing.T) {
	root := pkitest.NewRoot(t)
	for _, l := range []*pkitest.Leaf{root.Intermediate(t, "A").Leaf(t, "device-1"), pkitest.SelfSigned(t, "self-1")} {
		d := decide(t, x509attest.New(newFake(), x509attest.Options{}), l.Chain)
		if got, want := *d.Certificate, *wire.CertificateInfo(l.Cert); got != want {
			t.Fatalf("info\n got %+v\nwant %+v", got, want)
		}
	}
}

// TestCrossSignedLoop: two CAs that certify each other must not send the
// chain builder round in circles.
func TestCrossSignedLoop(t *testing.T) {
	x := pkitest.NewRoot(t, pkitest.Subject(pkix.Name{CommonName: "X"}))
	y := x.Intermediate(t, "Y")                               // Y <- X
	xByY := y.Intermediate(t, "X", pkitest.WithSigner(x.Key)) // X <- Y, same key as X
	leaf := x.Leaf(t, "device-1")                             // issuer X
	chain := []*x509.Certificate{leaf.Cert, xByY.Cert, y.Cert}
	e := x509attest.New(newFake().putGroup(x509Group("elsewhere", pkitest.NewRoot(t).Cert, true)), x509attest.Options{})
	want(t, decide(t, e, chain), x509attest.ReasonNoEnrollment)
	// Enrolling Y admits the device through the cross-signed X.
	e = x509attest.New(newFake().putGroup(x509Group("y", y.Cert, true)), x509attest.Options{})
	want(t, decide(t, e, chain), "")
}
