package hooks_test

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/big"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/google/go-tpm/tpm2"

	dpsdevice "github.com/dpsbroker/dpsbroker/clients/device"
	"github.com/dpsbroker/dpsbroker/clients/tpm"
	"github.com/dpsbroker/dpsbroker/clients/tpm/tpmsim"
	"github.com/dpsbroker/dpsbroker/hooks"
	"github.com/dpsbroker/dpsbroker/provisioning"
	"github.com/dpsbroker/dpsbroker/provisioning/pkitest"
	"github.com/dpsbroker/dpsbroker/provisioning/sas"
	"github.com/dpsbroker/dpsbroker/provisioning/tpmattest"
	"github.com/dpsbroker/dpsbroker/provisioning/tpmattest/tpmdecide"
	"github.com/dpsbroker/dpsbroker/provisioning/wire"
)

// The go-tpm-tools simulator is one per process (tpmsim.Open waits for the
// previous one to close), so none of these tests is parallel.

// fastPolls makes the 202s ask for a 1 s wait, the least there is.
func fastPolls(o *hooks.Options) { o.RetryAfter = time.Second }

// manyRegisters lifts the register rate limit for tests that send many.
func manyRegisters(o *hooks.Options) { o.PollBurst = 100 }

// simTPM opens the simulator (seeded, so that two TPMs differ) and a
// Device on it with EK and SRK of type kt. The returned func closes both,
// so that the next simulator can open; cleanup calls it too.
func simTPM(t *testing.T, seed int64, kt tpm.KeyType) (*tpm.Device, func()) {
	t.Helper()
	tr, err := tpmsim.OpenWithSeed(seed)
	if err != nil {
		t.Fatal(err)
	}
	d, err := tpm.New(context.Background(), tr, tpm.Options{EKType: kt, SRKType: kt})
	if err != nil {
		_ = tr.Close()
		t.Fatal(err)
	}
	var once sync.Once
	closeAll := func() { once.Do(func() { _ = d.Close(); _ = tr.Close() }) }
	t.Cleanup(closeAll)
	return d, closeAll
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

// enrollTPM enrolls ek (TPM2B_PUBLIC) as registration ID id.
func (e *env) enrollTPM(id string, ek []byte, status provisioning.ProvisioningStatus) {
	e.t.Helper()
	en := &provisioning.IndividualEnrollment{
		RegistrationID: id,
		Attestation: provisioning.AttestationMechanism{Type: provisioning.AttestationTPM,
			TPM: &provisioning.TPMAttestation{EndorsementKey: b64(ek)}},
		EnrollmentPolicy: provisioning.EnrollmentPolicy{ProvisioningStatus: status},
	}
	if _, err := e.store.PutEnrollment(context.Background(), en, ""); err != nil {
		e.t.Fatalf("PutEnrollment: %v", err)
	}
}

// putTPMGroup enrolls a TPM group keyed by the manufacturer CA in caPEM.
func (e *env) putTPMGroup(id, caPEM string, status provisioning.ProvisioningStatus) {
	e.t.Helper()
	g := &provisioning.EnrollmentGroup{
		EnrollmentGroupID: id,
		Attestation: provisioning.AttestationMechanism{Type: provisioning.AttestationTPM,
			X509: &provisioning.X509Attestation{SigningCertificates: &provisioning.X509Certificates{
				Primary: &provisioning.X509CertificateWithInfo{Certificate: caPEM},
			}}},
		EnrollmentPolicy: provisioning.EnrollmentPolicy{ProvisioningStatus: status},
	}
	if err := g.Validate(); err != nil {
		e.t.Fatalf("TPM group does not validate: %v", err)
	}
	if _, err := e.store.PutEnrollmentGroup(context.Background(), g, ""); err != nil {
		e.t.Fatalf("PutEnrollmentGroup: %v", err)
	}
}

// deviceConfig is a TPM provisioning run against e.
func (e *env) deviceConfig(d dpsdevice.TPM) dpsdevice.Config {
	return dpsdevice.Config{
		Broker:    e.addr,
		IDScope:   testScope,
		TLSConfig: e.tlsConfig(nil),
		TPM:       d,
	}
}

// ekCertFor issues an EK certificate for the TPM's EK under ca, the way
// manufacturers do (critical SAN directoryName is tested in x509attest;
// here only the chain matters).
func ekCertFor(t *testing.T, ca *pkitest.CA, d *tpm.Device) []byte {
	t.Helper()
	ek, err := tpmattest.ParseEK(d.EndorsementKey())
	if err != nil {
		t.Fatal(err)
	}
	pub, err := tpm2.Pub(*ek.Public)
	if err != nil {
		t.Fatal(err)
	}
	tpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		NotBefore:    time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageKeyEncipherment,
	}
	der, err := x509.CreateCertificate(rand.Reader, tpl, ca.Cert, pub, ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func checkTPMAssigned(t *testing.T, res *wire.DeviceRegistrationResult, err error, regID string) {
	t.Helper()
	if err != nil {
		t.Fatalf("Provision: %v", err)
	}
	if res.Status != wire.StatusAssigned || !strings.EqualFold(res.RegistrationID, regID) || res.AssignedHub == "" {
		t.Fatalf("result %+v", res)
	}
	if res.TPM == nil || res.TPM.AuthenticationKey == "" {
		t.Fatal("assigned without registrationState.tpm.authenticationKey")
	}
	if _, err := tpmattest.ParseBlob(res.TPM.AuthenticationKey); err != nil {
		t.Fatalf("authenticationKey: %v", err)
	}
}

// TestTPMProvision is the acceptance flow on the simulator: enroll the EK,
// provision with clients/device (challenge answered on the same connection,
// and on a new connection with the SAS token as password), get assigned.
func TestTPMProvision(t *testing.T) {
	for _, kt := range []tpm.KeyType{tpm.RSA, tpm.ECC} {
		for _, reconnect := range []bool{false, true} {
			t.Run(fmt.Sprintf("%v/reconnect=%v", kt, reconnect), func(t *testing.T) {
				e := newEnv(t, fastPolls)
				d, _ := simTPM(t, 1, kt)
				e.enrollTPM(d.RegistrationID(), d.EndorsementKey(), provisioning.StatusEnabled)
				cfg := e.deviceConfig(d)
				cfg.AnswerOnReconnect = reconnect
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				res, err := dpsdevice.Provision(ctx, cfg)
				checkTPMAssigned(t, res, err, d.RegistrationID())
				// The key of the assignment is in the TPM now: it signs.
				if _, err := d.SignSAS(ctx, "hub/devices/x", time.Now().Add(time.Hour)); err != nil {
					t.Fatal(err)
				}
				evs, _ := e.store.ReadEvents(ctx, "", 100)
				if len(evs) != 1 || evs[0].Type != provisioning.EventAssigned || evs[0].AttestationType != provisioning.AttestationTPM {
					t.Fatalf("events %+v", evs)
				}
			})
		}
	}
}

// TestTPMGroupProvision admits a TPM by its EK certificate under a TPM
// enrollment group keyed by the manufacturer CA.
func TestTPMGroupProvision(t *testing.T) {
	e := newEnv(t, fastPolls)
	root := pkitest.NewRoot(t, pkitest.Key(pkitest.ECDSAP256))
	mfr := root.Intermediate(t, "TPM Manufacturer CA", pkitest.Key(pkitest.ECDSAP256))
	e.putTPMGroup("tpm-fleet", string(root.CertPEM()), provisioning.StatusEnabled)
	d, _ := simTPM(t, 2, tpm.RSA)
	cfg := e.deviceConfig(d)
	cfg.EKCertificate = ekCertFor(t, mfr, d)
	cfg.EKCertificateChain = [][]byte{mfr.Cert.Raw}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := dpsdevice.Provision(ctx, cfg)
	checkTPMAssigned(t, res, err, d.RegistrationID())
	rec, err := e.store.GetRegistration(ctx, d.RegistrationID())
	if err != nil || rec.EnrollmentGroupID != "tpm-fleet" || rec.AttestationType != provisioning.AttestationTPM {
		t.Fatalf("record %+v %v", rec, err)
	}

	t.Run("disabled individual under the enabled group", func(t *testing.T) {
		e.enrollTPM(d.RegistrationID(), d.EndorsementKey(), provisioning.StatusDisabled)
		_, err := dpsdevice.Provision(ctx, cfg)
		if dpsdevice.ErrorCode(err) != 401002 {
			t.Fatalf("err %v, want 401002", err)
		}
	})
}

// tpmConn is a raw MQTT 5 device session without a certificate, for the
// refusal tests that no well-behaved client would produce.
type tpmConn struct {
	t     *testing.T
	d     *v5Device
	regID string
	n     int
}

func (e *env) tpmConn(t *testing.T, regID string, password string) *tpmConn {
	t.Helper()
	d, ca, err := e.dialV5(nil, regID, username(regID), func(c *paho.Connect) {
		if password != "" {
			c.Password, c.PasswordFlag = []byte(password), true
		}
	})
	if err != nil {
		t.Fatalf("connect: %v %+v", err, ca)
	}
	t.Cleanup(d.close)
	d.subscribe(wire.ResponseFilter, 1)
	return &tpmConn{t: t, d: d, regID: regID}
}

func (c *tpmConn) register(body *wire.TPMAttestation) response {
	c.t.Helper()
	c.n++
	rid := fmt.Sprintf("t%d", c.n)
	b, _ := json.Marshal(wire.RegisterRequest{RegistrationID: c.regID, TPM: body})
	return request(c.t, c.d, registerTopic(rid), 1, b, rid)
}

// challenge runs the first leg and returns the blob.
func (c *tpmConn) challenge(body *wire.TPMAttestation) string {
	c.t.Helper()
	r := c.register(body)
	ch, err := wire.DecodeTPMChallenge(r.body)
	if r.status != 401 || err != nil || ch.KeyName != wire.TPMKeyName {
		c.t.Fatalf("first leg: %d %s", r.status, r.body)
	}
	return ch.AuthenticationKey
}

func wantCode(t *testing.T, r response, code int) {
	t.Helper()
	if r.status != code/1000 || r.errorDetails(t).ErrorCode != code {
		t.Fatalf("got %d %s, want %d", r.status, r.body, code)
	}
}

func keysOf(d *tpm.Device) *wire.TPMAttestation {
	return &wire.TPMAttestation{EndorsementKey: b64(d.EndorsementKey()), StorageRootKey: b64(d.StorageRootKey())}
}

// answer imports the blob into d and returns the body with the SAS.
func answer(t *testing.T, d *tpm.Device, blob, regID string) *wire.TPMAttestation {
	t.Helper()
	ctx := context.Background()
	if err := d.ActivateAndImport(ctx, blob); err != nil {
		t.Fatalf("ActivateAndImport: %v", err)
	}
	tok, err := d.SignSAS(ctx, sas.Resource(testScope, regID), time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	b := keysOf(d)
	b.SASToken = tok
	return b
}

// TestTPMRefusals covers every refusal of DESIGN §5's safety list over
// MQTT, each with its code and a refusal event.
func TestTPMRefusals(t *testing.T) {
	refusedEvents := func(t *testing.T, e *env, min int) {
		t.Helper()
		evs, _ := e.store.ReadEvents(context.Background(), "", 1000)
		n := 0
		for _, ev := range evs {
			if ev.Type == provisioning.EventRefused && ev.AttestationType == provisioning.AttestationTPM && ev.ErrorCode != 0 && ev.Reason != "" {
				n++
			}
		}
		if n < min {
			t.Fatalf("%d TPM refusal events, want %d: %+v", n, min, evs)
		}
	}

	t.Run("replay", func(t *testing.T) {
		e := newEnv(t, manyRegisters)
		d, _ := simTPM(t, 3, tpm.ECC)
		id := d.RegistrationID()
		e.enrollTPM(id, d.EndorsementKey(), provisioning.StatusEnabled)
		c := e.tpmConn(t, id, "")
		body := answer(t, d, c.challenge(keysOf(d)), id)
		if r := c.register(body); r.status != 202 {
			t.Fatalf("answer: %d %s", r.status, r.body)
		}
		wantCode(t, c.register(body), tpmattest.CodeNoChallenge)
		// On another connection too.
		wantCode(t, e.tpmConn(t, id, "").register(body), tpmattest.CodeNoChallenge)
		// And as a CONNECT password.
		wantCode(t, e.tpmConn(t, id, body.SASToken).register(keysOf(d)), tpmattest.CodeNoChallenge)
		refusedEvents(t, e, 3)
	})

	t.Run("expired answer", func(t *testing.T) {
		var e *env
		e = newEnv(t, manyRegisters, func(o *hooks.Options) {
			o.TPM = &lateAttester{env: &e, ttl: 100 * time.Millisecond}
		})
		d, _ := simTPM(t, 4, tpm.ECC)
		id := d.RegistrationID()
		e.enrollTPM(id, d.EndorsementKey(), provisioning.StatusEnabled)
		c := e.tpmConn(t, id, "")
		body := answer(t, d, c.challenge(keysOf(d)), id)
		time.Sleep(300 * time.Millisecond)
		wantCode(t, c.register(body), tpmattest.CodeNoChallenge)
		refusedEvents(t, e, 1)
	})

	t.Run("answer from another TPM, wrong SRK", func(t *testing.T) {
		e := newEnv(t, manyRegisters)
		a, closeA := simTPM(t, 5, tpm.RSA)
		idA := a.RegistrationID()
		e.enrollTPM(idA, a.EndorsementKey(), provisioning.StatusEnabled)
		cA := e.tpmConn(t, idA, "")
		blobA := cA.challenge(keysOf(a))
		closeA()

		b, _ := simTPM(t, 6, tpm.RSA)
		idB := b.RegistrationID()
		e.enrollTPM(idB, b.EndorsementKey(), provisioning.StatusEnabled)
		// B cannot import A's challenge: the TPM refuses it.
		if err := b.ActivateAndImport(context.Background(), blobA); err == nil {
			t.Fatal("another TPM imported the challenge")
		}
		// B answers A's challenge with a key of its own: refused, consumed.
		cB := e.tpmConn(t, idB, "")
		blobB := cB.challenge(keysOf(b))
		forged := answer(t, b, blobB, idA)
		forged.EndorsementKey, forged.StorageRootKey = keysOf(a).EndorsementKey, keysOf(a).StorageRootKey
		wantCode(t, cA.register(forged), tpmattest.CodeBadSAS)
		wantCode(t, cA.register(forged), tpmattest.CodeNoChallenge)

		// A fresh challenge for A, answered with B's SRK: mismatch.
		cA.challenge(keysOf(a))
		wrongSRK := keysOf(a)
		wrongSRK.StorageRootKey = keysOf(b).StorageRootKey
		wrongSRK.SASToken = forged.SASToken
		wantCode(t, cA.register(wrongSRK), tpmattest.CodeChallengeMismatch)
		refusedEvents(t, e, 3)
	})

	t.Run("enrollment", func(t *testing.T) {
		e := newEnv(t, manyRegisters)
		d, closeD := simTPM(t, 7, tpm.ECC)
		other := keysOf(d)
		closeD()
		d2, _ := simTPM(t, 8, tpm.ECC)
		root := pkitest.NewRoot(t, pkitest.Key(pkitest.ECDSAP256))
		e.putTPMGroup("fleet", string(root.CertPEM()), provisioning.StatusEnabled)
		e.enrollTPM("disabled-tpm", d2.EndorsementKey(), provisioning.StatusDisabled)
		e.enrollTPM("other-ek", func() []byte { b, _ := base64.StdEncoding.DecodeString(other.EndorsementKey); return b }(), provisioning.StatusEnabled)
		e.enrollTPM(d2.RegistrationID(), d2.EndorsementKey(), provisioning.StatusDisabled)
		withCert := keysOf(d2)
		withCert.EndorsementKeyCertificate = b64(ekCertFor(t, root, d2))

		wantCode(t, e.tpmConn(t, "not-enrolled", "").register(keysOf(d2)), 401002)
		wantCode(t, e.tpmConn(t, "disabled-tpm", "").register(keysOf(d2)), 401002)
		wantCode(t, e.tpmConn(t, "other-ek", "").register(keysOf(d2)), tpmattest.CodeEKMismatch)
		// Individual disabled under an enabled group.
		wantCode(t, e.tpmConn(t, d2.RegistrationID(), "").register(withCert), 401002)
		refusedEvents(t, e, 4)
	})

	t.Run("malformed", func(t *testing.T) {
		e := newEnv(t, manyRegisters)
		d, _ := simTPM(t, 9, tpm.ECC)
		id := d.RegistrationID()
		e.enrollTPM(id, d.EndorsementKey(), provisioning.StatusEnabled)
		c := e.tpmConn(t, id, "")
		mod := func(f func(b *wire.TPMAttestation)) *wire.TPMAttestation {
			b := keysOf(d)
			f(b)
			return b
		}
		wantCode(t, c.register(mod(func(b *wire.TPMAttestation) { b.EndorsementKey = "AAEC" })), tpmattest.CodeMalformedKey)
		wantCode(t, c.register(mod(func(b *wire.TPMAttestation) { b.StorageRootKey = "AAEC" })), tpmattest.CodeMalformedKey)
		wantCode(t, c.register(mod(func(b *wire.TPMAttestation) {
			b.EndorsementKey = b64(make([]byte, tpmattest.MaxPublicLen+64))
		})), tpmattest.CodeMalformedKey)
		// The SRK is a key of the same shape, but not the enrolled EK.
		wantCode(t, c.register(mod(func(b *wire.TPMAttestation) { b.EndorsementKey = b.StorageRootKey })), tpmattest.CodeEKMismatch)
		wantCode(t, c.register(mod(func(b *wire.TPMAttestation) { b.EndorsementKey = "%%" })), wire.ErrorCodeInvalidJSON)
		wantCode(t, c.register(mod(func(b *wire.TPMAttestation) { b.SASToken = strings.Repeat("x", wire.MaxSASTokenLen+1) })), wire.ErrorCodeInvalidJSON)
		// A malformed answer consumes the challenge.
		c.challenge(keysOf(d))
		wantCode(t, c.register(mod(func(b *wire.TPMAttestation) { b.SASToken = "SharedAccessSignature garbage" })), tpmattest.CodeBadSAS)
		wantCode(t, c.register(mod(func(b *wire.TPMAttestation) { b.SASToken = "SharedAccessSignature garbage" })), tpmattest.CodeNoChallenge)
		// A malformed EK certificate (group path).
		wantCode(t, e.tpmConn(t, "nobody", "").register(mod(func(b *wire.TPMAttestation) { b.EndorsementKeyCertificate = "AAAA" })),
			tpmattest.CodeMalformedEKCertificate)
		// A password that is not a SAS token is refused at CONNECT.
		_, ca, err := e.dialV5(nil, id, username(id), func(c *paho.Connect) { c.Password, c.PasswordFlag = []byte("hunter2"), true })
		if err == nil || ca == nil || ca.ReasonCode != 0x87 || ca.Properties == nil || ca.Properties.ReasonString != "401000 malformed SAS token" {
			t.Fatalf("connect with a non-SAS password: %v %+v", err, ca)
		}
		refusedEvents(t, e, 7)
	})
}

// lateAttester is tpmdecide.Attester with a short challenge TTL, built
// once the env (and its store) exists.
type lateAttester struct {
	env  **env
	ttl  time.Duration
	once atomic.Pointer[tpmdecide.Attester]
}

func (l *lateAttester) get() *tpmdecide.Attester {
	if a := l.once.Load(); a != nil {
		return a
	}
	st := (*l.env).store
	a, err := tpmdecide.New(st, tpmdecide.Options{Challenges: st, ChallengeTTL: l.ttl})
	if err != nil {
		panic(err)
	}
	l.once.Store(a)
	return a
}

func (l *lateAttester) Challenge(ctx context.Context, id string, b *wire.TPMAttestation) (*tpmdecide.Decision, error) {
	return l.get().Challenge(ctx, id, b)
}

func (l *lateAttester) Answer(ctx context.Context, scope, id string, b *wire.TPMAttestation, tok string) (*tpmdecide.Decision, error) {
	return l.get().Answer(ctx, scope, id, b, tok)
}
