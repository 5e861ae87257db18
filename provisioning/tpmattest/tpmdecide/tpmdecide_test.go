package tpmdecide_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"errors"
	"math/big"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"

	"github.com/dpsbroker/dpsbroker/provisioning"
	"github.com/dpsbroker/dpsbroker/provisioning/pkitest"
	"github.com/dpsbroker/dpsbroker/provisioning/sas"
	"github.com/dpsbroker/dpsbroker/provisioning/tpmattest"
	"github.com/dpsbroker/dpsbroker/provisioning/tpmattest/tpmdecide"
	"github.com/dpsbroker/dpsbroker/provisioning/wire"
	"github.com/dpsbroker/dpsbroker/provisioning/x509attest"
)

const scope = "0ne00TPM001"

// fakeStore is an in-memory Enrollments, GroupStore snapshot and
// ChallengeStore; TakeChallenge deletes, as the real stores do.
type fakeStore struct {
	mu          sync.Mutex
	enrollments map[string]*provisioning.IndividualEnrollment
	groups      []*provisioning.EnrollmentGroup
	challenges  map[string][]byte
	err         error
}

func newStore() *fakeStore {
	return &fakeStore{enrollments: map[string]*provisioning.IndividualEnrollment{}, challenges: map[string][]byte{}}
}

func (f *fakeStore) GetEnrollment(_ context.Context, id string) (*provisioning.IndividualEnrollment, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return nil, f.err
	}
	if e, ok := f.enrollments[provisioning.RegistrationKey(id)]; ok {
		return e, nil
	}
	return nil, provisioning.ErrNotFound
}

func (f *fakeStore) ListEnrollmentGroups(context.Context) ([]*provisioning.EnrollmentGroup, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.groups, f.err
}

func (f *fakeStore) GetCACertificate(context.Context, string) (*provisioning.CACertificate, error) {
	return nil, provisioning.ErrNotFound
}

func (f *fakeStore) PutChallenge(_ context.Context, key string, v []byte, _ time.Duration) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return f.err
	}
	f.challenges[key] = v
	return nil
}

func (f *fakeStore) TakeChallenge(_ context.Context, key string) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return nil, f.err
	}
	v, ok := f.challenges[key]
	if !ok {
		return nil, provisioning.ErrNotFound
	}
	delete(f.challenges, key)
	return v, nil
}

// peekKey returns the HMAC key of the pending challenge: what only the
// TPM could recover from the blob.
func (f *fakeStore) peekKey(t *testing.T, regID string, ek []byte) []byte {
	t.Helper()
	k, err := tpmattest.ParseEK(ek)
	if err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	b := f.challenges[tpmattest.ChallengeKey(regID, k.Digest)]
	f.mu.Unlock()
	p, err := tpmattest.UnmarshalPendingChallenge(b)
	if err != nil {
		t.Fatalf("no pending challenge: %v", err)
	}
	return p.Key
}

// tpmKeys is a software EK (with its ECDSA view for certificates) and SRK.
type tpmKeys struct {
	ek, srk []byte
	ekPub   *ecdsa.PublicKey
}

func eccKey(t *testing.T, template tpm2.TPMTPublic) ([]byte, *ecdsa.PublicKey) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pub := tpm2.Marshal(template) // deep copy of the template's unions
	cp, err := tpm2.Unmarshal[tpm2.TPMTPublic](pub)
	if err != nil {
		t.Fatal(err)
	}
	cp.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
		X: tpm2.TPM2BECCParameter{Buffer: k.X.FillBytes(make([]byte, 32))},
		Y: tpm2.TPM2BECCParameter{Buffer: k.Y.FillBytes(make([]byte, 32))},
	})
	return tpm2.Marshal(tpm2.New2B(*cp)), &k.PublicKey
}

func newKeys(t *testing.T) tpmKeys {
	ek, ekPub := eccKey(t, tpm2.ECCEKTemplate)
	srk, _ := eccKey(t, tpm2.ECCSRKTemplate)
	return tpmKeys{ek: ek, srk: srk, ekPub: ekPub}
}

func (k tpmKeys) regID() string { return tpmattest.RegistrationIDFromEK(k.ek) }

func (k tpmKeys) body() *wire.TPMAttestation {
	return &wire.TPMAttestation{
		EndorsementKey: base64.StdEncoding.EncodeToString(k.ek),
		StorageRootKey: base64.StdEncoding.EncodeToString(k.srk),
	}
}

func tpmEnrollment(id string, ek []byte, enabled bool) *provisioning.IndividualEnrollment {
	e := &provisioning.IndividualEnrollment{
		RegistrationID: id,
		Attestation: provisioning.AttestationMechanism{Type: provisioning.AttestationTPM,
			TPM: &provisioning.TPMAttestation{EndorsementKey: base64.StdEncoding.EncodeToString(ek)}},
	}
	if !enabled {
		e.ProvisioningStatus = provisioning.StatusDisabled
	}
	return e
}

func tpmGroup(id string, ca *pkitest.CA, enabled bool) *provisioning.EnrollmentGroup {
	g := &provisioning.EnrollmentGroup{
		EnrollmentGroupID: id,
		Attestation: provisioning.AttestationMechanism{Type: provisioning.AttestationTPM,
			X509: &provisioning.X509Attestation{SigningCertificates: &provisioning.X509Certificates{
				Primary: &provisioning.X509CertificateWithInfo{Certificate: string(ca.CertPEM())},
			}}},
	}
	if !enabled {
		g.ProvisioningStatus = provisioning.StatusDisabled
	}
	return g
}

// ekCertB64 issues an EK certificate for pub under ca (critical SAN with a
// directoryName, keyEncipherment), as base64 DER.
func ekCertB64(t *testing.T, ca *pkitest.CA, pub any) string {
	t.Helper()
	dir, _ := asn1.Marshal(pkix.Name{ExtraNames: []pkix.AttributeTypeAndValue{
		{Type: asn1.ObjectIdentifier{2, 23, 133, 2, 1}, Value: "id:44504253"}}}.ToRDNSequence())
	san, _ := asn1.Marshal([]asn1.RawValue{{Class: asn1.ClassContextSpecific, Tag: 4, IsCompound: true, Bytes: dir}})
	tpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		NotBefore:    time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage:        x509.KeyUsageKeyAgreement,
		ExtraExtensions: []pkix.Extension{{Id: asn1.ObjectIdentifier{2, 5, 29, 17}, Critical: true, Value: san}},
	}
	der, err := x509.CreateCertificate(rand.Reader, tpl, ca.Cert, pub, ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(der)
}

type env struct {
	st  *fakeStore
	a   *tpmdecide.Attester
	now time.Time
}

func newEnv(t *testing.T) *env {
	e := &env{st: newStore(), now: time.Now()}
	a, err := tpmdecide.New(e.st, tpmdecide.Options{
		Challenges: e.st,
		Groups:     x509attest.New(e.st, x509attest.Options{}),
		Now:        func() time.Time { return e.now },
	})
	if err != nil {
		t.Fatal(err)
	}
	e.a = a
	return e
}

func (e *env) challenge(t *testing.T, regID string, b *wire.TPMAttestation) *tpmdecide.Decision {
	t.Helper()
	d, err := e.a.Challenge(context.Background(), regID, b)
	if err != nil {
		t.Fatalf("Challenge: %v", err)
	}
	return d
}

func (e *env) answer(t *testing.T, regID string, b *wire.TPMAttestation, token string) *tpmdecide.Decision {
	t.Helper()
	d, err := e.a.Answer(context.Background(), scope, regID, b, token)
	if err != nil {
		t.Fatalf("Answer: %v", err)
	}
	return d
}

func sign(t *testing.T, key []byte, regID string, exp time.Time) string {
	t.Helper()
	return sas.Sign(key, sas.Resource(scope, regID), exp, sas.DefaultKeyName, true)
}

func wantRefused(t *testing.T, d *tpmdecide.Decision, reason tpmdecide.Reason, code int) {
	t.Helper()
	if d.Admitted || d.Reason != reason || d.ErrorCode != code {
		t.Fatalf("decision admitted=%v reason=%q code=%d (%s); want refused %q %d", d.Admitted, d.Reason, d.ErrorCode, d.Explanation, reason, code)
	}
	if d.Explanation == "" {
		t.Error("refusal without explanation")
	}
}

func TestIndividualTwoLegs(t *testing.T) {
	e := newEnv(t)
	k := newKeys(t)
	e.st.enrollments["tpm-1"] = tpmEnrollment("tpm-1", k.ek, true)

	d := e.challenge(t, "tpm-1", k.body())
	if !d.Admitted || d.AuthenticationKey == "" || d.Enrollment == nil {
		t.Fatalf("first leg: %+v", d)
	}
	if _, err := tpmattest.ParseBlob(d.AuthenticationKey); err != nil {
		t.Fatalf("blob: %v", err)
	}
	key := e.st.peekKey(t, "tpm-1", k.ek)
	tok := sign(t, key, "tpm-1", e.now.Add(time.Hour))
	d = e.answer(t, "tpm-1", k.body(), tok)
	if !d.Admitted || d.AuthenticationKey == "" || d.DeviceID != "tpm-1" {
		t.Fatalf("second leg: %+v", d)
	}
	// Replay: the challenge was consumed.
	wantRefused(t, e.answer(t, "tpm-1", k.body(), tok), tpmdecide.ReasonNoChallenge, tpmattest.CodeNoChallenge)
}

func TestSecondLegRefusals(t *testing.T) {
	k, other := newKeys(t), newKeys(t)
	tests := []struct {
		name   string
		answer func(t *testing.T, e *env, key []byte) *tpmdecide.Decision
		reason tpmdecide.Reason
		code   int
	}{
		{"wrong SAS key (another TPM's answer)", func(t *testing.T, e *env, _ []byte) *tpmdecide.Decision {
			return e.answer(t, "tpm-1", k.body(), sign(t, make([]byte, 32), "tpm-1", e.now.Add(time.Hour)))
		}, tpmdecide.ReasonBadSAS, tpmattest.CodeBadSAS},
		{"SAS for another registration ID", func(t *testing.T, e *env, key []byte) *tpmdecide.Decision {
			return e.answer(t, "tpm-1", k.body(), sign(t, key, "tpm-2", e.now.Add(time.Hour)))
		}, tpmdecide.ReasonBadSAS, tpmattest.CodeBadSAS},
		{"expired SAS", func(t *testing.T, e *env, key []byte) *tpmdecide.Decision {
			return e.answer(t, "tpm-1", k.body(), sign(t, key, "tpm-1", e.now.Add(-time.Hour)))
		}, tpmdecide.ReasonBadSAS, tpmattest.CodeBadSAS},
		{"malformed SAS", func(t *testing.T, e *env, _ []byte) *tpmdecide.Decision {
			return e.answer(t, "tpm-1", k.body(), "SharedAccessSignature nonsense")
		}, tpmdecide.ReasonBadSAS, tpmattest.CodeBadSAS},
		{"challenge expired", func(t *testing.T, e *env, key []byte) *tpmdecide.Decision {
			e.now = e.now.Add(tpmattest.DefaultChallengeTTL + time.Second)
			return e.answer(t, "tpm-1", k.body(), sign(t, key, "tpm-1", e.now.Add(time.Hour)))
		}, tpmdecide.ReasonNoChallenge, tpmattest.CodeNoChallenge},
		{"another SRK", func(t *testing.T, e *env, key []byte) *tpmdecide.Decision {
			b := k.body()
			b.StorageRootKey = other.body().StorageRootKey
			return e.answer(t, "tpm-1", b, sign(t, key, "tpm-1", e.now.Add(time.Hour)))
		}, tpmdecide.ReasonChallengeMismatch, tpmattest.CodeChallengeMismatch},
		{"another EK finds no challenge", func(t *testing.T, e *env, key []byte) *tpmdecide.Decision {
			return e.answer(t, "tpm-1", other.body(), sign(t, key, "tpm-1", e.now.Add(time.Hour)))
		}, tpmdecide.ReasonNoChallenge, tpmattest.CodeNoChallenge},
		{"malformed SRK", func(t *testing.T, e *env, key []byte) *tpmdecide.Decision {
			b := k.body()
			b.StorageRootKey = "AAAA"
			return e.answer(t, "tpm-1", b, sign(t, key, "tpm-1", e.now.Add(time.Hour)))
		}, tpmdecide.ReasonMalformed, tpmattest.CodeMalformedKey},
		{"disabled between the legs", func(t *testing.T, e *env, key []byte) *tpmdecide.Decision {
			e.st.enrollments["tpm-1"] = tpmEnrollment("tpm-1", k.ek, false)
			return e.answer(t, "tpm-1", k.body(), sign(t, key, "tpm-1", e.now.Add(time.Hour)))
		}, tpmdecide.ReasonIndividualDisabled, x509attest.ErrorCodeUnauthorized},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			e.st.enrollments["tpm-1"] = tpmEnrollment("tpm-1", k.ek, true)
			if d := e.challenge(t, "tpm-1", k.body()); !d.Admitted {
				t.Fatalf("first leg refused: %s", d.Explanation)
			}
			key := e.st.peekKey(t, "tpm-1", k.ek)
			wantRefused(t, tt.answer(t, e, key), tt.reason, tt.code)
			if tt.reason == tpmdecide.ReasonMalformed || strings.HasPrefix(tt.name, "another EK") {
				return // nothing was taken: the keys did not parse, or name another challenge
			}
			// Whatever went wrong, the challenge is gone: the right answer
			// now fails too.
			e.now = time.Now()
			e.st.enrollments["tpm-1"] = tpmEnrollment("tpm-1", k.ek, true)
			wantRefused(t, e.answer(t, "tpm-1", k.body(), sign(t, key, "tpm-1", e.now.Add(time.Hour))),
				tpmdecide.ReasonNoChallenge, tpmattest.CodeNoChallenge)
		})
	}
}

func TestFirstLegRefusals(t *testing.T) {
	k, other := newKeys(t), newKeys(t)
	root := pkitest.NewRoot(t, pkitest.Key(pkitest.ECDSAP256))
	mfr := root.Intermediate(t, "TPM Manufacturer CA", pkitest.Key(pkitest.ECDSAP256))
	withCert := func(regID string, cert string) (string, *wire.TPMAttestation) {
		b := k.body()
		b.EndorsementKeyCertificate = cert
		return regID, b
	}
	signingKey := func() []byte { // a TPM2B_PUBLIC that is a signing key, not an EK
		tpl := tpm2.Marshal(tpm2.ECCEKTemplate)
		p, _ := tpm2.Unmarshal[tpm2.TPMTPublic](tpl)
		p.ObjectAttributes.Decrypt, p.ObjectAttributes.SignEncrypt = false, true
		return tpm2.Marshal(tpm2.New2B(*p))
	}
	tests := []struct {
		name   string
		setup  func(st *fakeStore)
		req    func() (string, *wire.TPMAttestation)
		reason tpmdecide.Reason
		code   int
		group  string
	}{
		{"EK not enrolled", nil, func() (string, *wire.TPMAttestation) { return "tpm-1", k.body() },
			tpmdecide.ReasonNoEnrollment, x509attest.ErrorCodeUnauthorized, ""},
		{"enrollment disabled", func(st *fakeStore) { st.enrollments["tpm-1"] = tpmEnrollment("tpm-1", k.ek, false) },
			func() (string, *wire.TPMAttestation) { return "tpm-1", k.body() },
			tpmdecide.ReasonIndividualDisabled, x509attest.ErrorCodeUnauthorized, ""},
		{"another EK enrolled", func(st *fakeStore) { st.enrollments["tpm-1"] = tpmEnrollment("tpm-1", other.ek, true) },
			func() (string, *wire.TPMAttestation) { return "tpm-1", k.body() },
			tpmdecide.ReasonEKMismatch, tpmattest.CodeEKMismatch, ""},
		{"x509 enrollment", func(st *fakeStore) {
			st.enrollments["tpm-1"] = &provisioning.IndividualEnrollment{RegistrationID: "tpm-1",
				Attestation: provisioning.AttestationMechanism{Type: provisioning.AttestationX509}}
		}, func() (string, *wire.TPMAttestation) { return "tpm-1", k.body() },
			tpmdecide.ReasonNotTPM, x509attest.ErrorCodeUnauthorized, ""},
		{"malformed EK", nil, func() (string, *wire.TPMAttestation) {
			b := k.body()
			b.EndorsementKey = "AAEC"
			return "tpm-1", b
		}, tpmdecide.ReasonMalformed, tpmattest.CodeMalformedKey, ""},
		{"oversized EK", nil, func() (string, *wire.TPMAttestation) {
			b := k.body()
			b.EndorsementKey = base64.StdEncoding.EncodeToString(make([]byte, tpmattest.MaxPublicLen+1))
			return "tpm-1", b
		}, tpmdecide.ReasonMalformed, tpmattest.CodeMalformedKey, ""},
		{"signing key as EK", nil, func() (string, *wire.TPMAttestation) {
			b := k.body()
			b.EndorsementKey = base64.StdEncoding.EncodeToString(signingKey())
			return "tpm-1", b
		}, tpmdecide.ReasonUnsupportedKey, tpmattest.CodeUnsupportedKey, ""},
		{"malformed SRK", func(st *fakeStore) { st.enrollments["tpm-1"] = tpmEnrollment("tpm-1", k.ek, true) },
			func() (string, *wire.TPMAttestation) {
				b := k.body()
				b.StorageRootKey = base64.StdEncoding.EncodeToString([]byte{0, 1, 2})
				return "tpm-1", b
			}, tpmdecide.ReasonMalformed, tpmattest.CodeMalformedKey, ""},
		{"group: not the EK's registration ID", func(st *fakeStore) { st.groups = []*provisioning.EnrollmentGroup{tpmGroup("mfr", mfr, true)} },
			func() (string, *wire.TPMAttestation) { return withCert("tpm-1", ekCertB64(t, mfr, k.ekPub)) },
			tpmdecide.ReasonRegistrationID, x509attest.ErrorCodeUnauthorized, ""},
		{"group: certificate of another EK", func(st *fakeStore) { st.groups = []*provisioning.EnrollmentGroup{tpmGroup("mfr", mfr, true)} },
			func() (string, *wire.TPMAttestation) { return withCert(k.regID(), ekCertB64(t, mfr, other.ekPub)) },
			tpmdecide.ReasonEKMismatch, tpmattest.CodeEKMismatch, ""},
		{"group: malformed certificate", func(st *fakeStore) { st.groups = []*provisioning.EnrollmentGroup{tpmGroup("mfr", mfr, true)} },
			func() (string, *wire.TPMAttestation) { return withCert(k.regID(), "AAAA") },
			tpmdecide.ReasonMalformed, tpmattest.CodeMalformedEKCertificate, ""},
		{"group disabled", func(st *fakeStore) { st.groups = []*provisioning.EnrollmentGroup{tpmGroup("mfr", mfr, false)} },
			func() (string, *wire.TPMAttestation) { return withCert(k.regID(), ekCertB64(t, mfr, k.ekPub)) },
			tpmdecide.ReasonGroupDisabled, x509attest.ErrorCodeUnauthorized, "mfr"},
		{"group of another CA", func(st *fakeStore) {
			st.groups = []*provisioning.EnrollmentGroup{tpmGroup("root", pkitest.NewRoot(t), true)}
		},
			func() (string, *wire.TPMAttestation) { return withCert(k.regID(), ekCertB64(t, mfr, k.ekPub)) },
			tpmdecide.ReasonNoEnrollment, x509attest.ErrorCodeUnauthorized, ""},
		{"individual disabled under an enabled group", func(st *fakeStore) {
			st.groups = []*provisioning.EnrollmentGroup{tpmGroup("mfr", mfr, true)}
			st.enrollments[k.regID()] = tpmEnrollment(k.regID(), k.ek, false)
		}, func() (string, *wire.TPMAttestation) { return withCert(k.regID(), ekCertB64(t, mfr, k.ekPub)) },
			tpmdecide.ReasonIndividualDisabled, x509attest.ErrorCodeUnauthorized, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			if tt.setup != nil {
				tt.setup(e.st)
			}
			id, b := tt.req()
			d := e.challenge(t, id, b)
			wantRefused(t, d, tt.reason, tt.code)
			if got := groupOf(d); got != tt.group {
				t.Errorf("group %q, want %q", got, tt.group)
			}
			if len(e.st.challenges) != 0 {
				t.Error("a refused device got a challenge")
			}
			if strings.Contains(d.Explanation, b.EndorsementKey) && b.EndorsementKey != "" {
				t.Error("explanation holds the key")
			}
		})
	}
}

func TestGroupAdmits(t *testing.T) {
	e := newEnv(t)
	k := newKeys(t)
	root := pkitest.NewRoot(t, pkitest.Key(pkitest.ECDSAP256))
	mfr := root.Intermediate(t, "TPM Manufacturer CA", pkitest.Key(pkitest.ECDSAP256))
	e.st.groups = []*provisioning.EnrollmentGroup{tpmGroup("root", root, true)}
	b := k.body()
	b.EndorsementKeyCertificate = ekCertB64(t, mfr, k.ekPub)
	b.EndorsementKeyCertificateChain = []string{base64.StdEncoding.EncodeToString(mfr.Cert.Raw)}
	d := e.challenge(t, k.regID(), b)
	if !d.Admitted || groupOf(d) != "root" || d.EKCertificate == nil || d.SigningCertificate == nil {
		t.Fatalf("group device refused: %+v", d)
	}
	key := e.st.peekKey(t, k.regID(), k.ek)
	d = e.answer(t, k.regID(), b, sign(t, key, k.regID(), e.now.Add(time.Hour)))
	if !d.Admitted || groupOf(d) != "root" || d.AuthenticationKey == "" {
		t.Fatalf("second leg: %+v", d)
	}
}

func TestStoreErrorsFailClosed(t *testing.T) {
	e := newEnv(t)
	k := newKeys(t)
	e.st.err = errors.New("store down")
	if _, err := e.a.Challenge(context.Background(), "tpm-1", k.body()); err == nil {
		t.Error("Challenge: no error")
	}
	if _, err := e.a.Answer(context.Background(), scope, "tpm-1", k.body(), "x"); err == nil {
		t.Error("Answer: no error")
	}
}

func groupOf(d *tpmdecide.Decision) string {
	if d.Group == nil {
		return ""
	}
	return d.Group.EnrollmentGroupID
}
