package tpm_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"errors"
	"math/big"
	"net"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"

	"github.com/dpsbroker/dpsbroker/clients/tpm"
	"github.com/dpsbroker/dpsbroker/clients/tpm/tpmsim"
	"github.com/dpsbroker/dpsbroker/provisioning/sas"
	"github.com/dpsbroker/dpsbroker/provisioning/tpmattest"
)

// otherTPM returns the EK and SRK of a TPM other than the next one a test
// opens: the simulator gets new seeds on every open.
func otherTPM(t *testing.T, ek, srk tpm.KeyType) (ekPub, srkPub []byte) {
	t.Helper()
	sim, err := tpmsim.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	d, err := tpm.New(context.Background(), sim, tpm.Options{EKType: ek, SRKType: srk})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	return d.EndorsementKey(), d.StorageRootKey()
}

// tamper flips one bit of a blob part.
func tamper(t *testing.T, authKey string, f func(b *tpmattest.Blob)) string {
	t.Helper()
	b, err := tpmattest.ParseBlob(authKey)
	if err != nil {
		t.Fatal(err)
	}
	f(b)
	return b.Encode()
}

func TestActivateRefuses(t *testing.T) {
	for _, typ := range []tpm.KeyType{tpm.RSA, tpm.ECC} {
		otherEK, otherSRK := otherTPM(t, typ, typ)
		for _, tt := range []struct {
			name string
			blob func(t *testing.T, ek, srk []byte) string
			rc   tpm2.TPMRC // 0: any TPM error
		}{
			{"blob for another TPM's EK", func(t *testing.T, _, srk []byte) string {
				return challenge(t, otherEK, srk).AuthenticationKey
			}, 0}, // libtpms: TPM_RC_FAILURE (OAEP); the MS simulator may say otherwise
			{"credential bound to another SRK", func(t *testing.T, ek, _ []byte) string {
				return challenge(t, ek, otherSRK).AuthenticationKey
			}, tpm2.TPMRCIntegrity},
			{"tampered duplicate", func(t *testing.T, ek, srk []byte) string {
				return tamper(t, challenge(t, ek, srk).AuthenticationKey, func(b *tpmattest.Blob) { b.Duplicate[60] ^= 1 })
			}, tpm2.TPMRCIntegrity},
			{"tampered public", func(t *testing.T, ek, srk []byte) string {
				return tamper(t, challenge(t, ek, srk).AuthenticationKey, func(b *tpmattest.Blob) { b.Public[40] ^= 1 })
			}, tpm2.TPMRCIntegrity},
			{"tampered credential", func(t *testing.T, ek, srk []byte) string {
				return tamper(t, challenge(t, ek, srk).AuthenticationKey, func(b *tpmattest.Blob) { b.IDObject[40] ^= 1 })
			}, tpm2.TPMRCIntegrity},
		} {
			t.Run(typ.String()+"/"+tt.name, func(t *testing.T) {
				d := newDevice(t, openSim(t), tpm.Options{EKType: typ, SRKType: typ})
				err := d.ActivateAndImport(context.Background(), tt.blob(t, d.EndorsementKey(), d.StorageRootKey()))
				t.Logf("TPM says: %v", err)
				var rc tpm2.TPMRC
				if !errors.As(err, &rc) {
					t.Fatalf("err = %v, want a TPM error", err)
				}
				if tt.rc != 0 && !errors.Is(err, tt.rc) {
					t.Errorf("err = %v, want %v", err, tt.rc)
				}
				if _, err := d.SignSAS(context.Background(), "x/registrations/y", time.Now()); !errors.Is(err, tpm.ErrNoKey) {
					t.Errorf("SignSAS after a failed import: %v, want ErrNoKey", err)
				}
			})
		}
	}
}

func challenge(t *testing.T, ek, srk []byte) *tpmattest.Challenge {
	t.Helper()
	ch, err := tpmattest.NewChallenge(nil, ek, srk)
	if err != nil {
		t.Fatal(err)
	}
	return ch
}

func TestActivateRefusesGarbage(t *testing.T) {
	d := newDevice(t, openSim(t), tpm.Options{EKType: tpm.ECC, SRKType: tpm.ECC})
	for _, blob := range []string{"", "AAAA", base64.StdEncoding.EncodeToString(make([]byte, 12))} {
		if err := d.ActivateAndImport(context.Background(), blob); err == nil {
			t.Errorf("ActivateAndImport(%q): no error", blob)
		}
	}
}

func TestSignSASWrongKey(t *testing.T) {
	ctx := context.Background()
	d := newDevice(t, openSim(t), tpm.Options{EKType: tpm.ECC, SRKType: tpm.ECC})
	ch := challenge(t, d.EndorsementKey(), d.StorageRootKey())
	other := challenge(t, d.EndorsementKey(), d.StorageRootKey())
	if err := d.ActivateAndImport(ctx, ch.AuthenticationKey); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	token, err := d.SignSAS(ctx, sas.Resource(idScope, "dev-1"), now.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	err = tpmattest.VerifySAS(token, other.Key, idScope, "dev-1", now)
	if tpmattest.ErrorCode(err) != tpmattest.CodeBadSAS || !errors.Is(err, sas.ErrBadSignature) {
		t.Errorf("SAS under another challenge's key: %v", err)
	}

	// A second blob (the hub key of registrationState.tpm) replaces the
	// first key, as in the SDKs.
	if err := d.ActivateAndImport(ctx, other.AuthenticationKey); err != nil {
		t.Fatalf("second import: %v", err)
	}
	token, err = d.SignSAS(ctx, sas.Resource(idScope, "dev-1"), now.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if err := tpmattest.VerifySAS(token, other.Key, idScope, "dev-1", now); err != nil {
		t.Errorf("after the second import: %v", err)
	}
}

func TestHMACLongData(t *testing.T) {
	ctx := context.Background()
	d := newDevice(t, openSim(t), tpm.Options{EKType: tpm.ECC, SRKType: tpm.RSA})
	ch := challenge(t, d.EndorsementKey(), d.StorageRootKey())
	if err := d.ActivateAndImport(ctx, ch.AuthenticationKey); err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{0, 1024, 1025, 3000} {
		data := bytes.Repeat([]byte{'a'}, n)
		got, err := d.HMAC(ctx, data)
		if err != nil {
			t.Fatalf("HMAC of %d bytes: %v", n, err)
		}
		m := hmac.New(sha256.New, ch.Key)
		m.Write(data)
		if !hmac.Equal(got, m.Sum(nil)) {
			t.Errorf("HMAC of %d bytes differs from software", n)
		}
	}
}

// TestPersistAndReopen: with Persist, a new Device on the same TPM (a
// restarted device) finds EK, SRK and the imported key at the standard
// handles and signs without a new challenge.
func TestPersistAndReopen(t *testing.T) {
	ctx := context.Background()
	sim := openSim(t)
	d1, err := tpm.New(ctx, sim, tpm.Options{EKType: tpm.ECC, SRKType: tpm.RSA, Persist: true})
	if err != nil {
		t.Fatal(err)
	}
	ch := challenge(t, d1.EndorsementKey(), d1.StorageRootKey())
	if err := d1.ActivateAndImport(ctx, ch.AuthenticationKey); err != nil {
		t.Fatal(err)
	}
	d1.Close()

	d2 := newDevice(t, sim, tpm.Options{EKType: tpm.RSA, SRKType: tpm.ECC, Persist: true})
	if !bytes.Equal(d2.EndorsementKey(), d1.EndorsementKey()) || !bytes.Equal(d2.StorageRootKey(), d1.StorageRootKey()) {
		t.Fatal("reopened device did not use the persisted EK and SRK")
	}
	now := time.Now()
	token, err := d2.SignSAS(ctx, sas.Resource(idScope, d2.RegistrationID()), now.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if err := tpmattest.VerifySAS(token, ch.Key, idScope, d2.RegistrationID(), now); err != nil {
		t.Error(err)
	}
}

func TestSigner(t *testing.T) {
	ctx := context.Background()
	d := newDevice(t, openSim(t), tpm.Options{EKType: tpm.ECC, SRKType: tpm.ECC})
	s, err := d.NewSigner(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pub, ok := s.Public().(*ecdsa.PublicKey)
	if !ok {
		t.Fatalf("Public() is %T", s.Public())
	}
	for _, h := range []crypto.Hash{crypto.SHA256, crypto.SHA384} {
		digest := func() []byte {
			if h == crypto.SHA384 {
				d := sha512.Sum384([]byte("hello"))
				return d[:]
			}
			d := sha256.Sum256([]byte("hello"))
			return d[:]
		}()
		sig, err := s.Sign(nil, digest, h)
		if err != nil {
			t.Fatalf("Sign %v: %v", h, err)
		}
		if !ecdsa.VerifyASN1(pub, digest, sig) {
			t.Errorf("%v signature does not verify", h)
		}
	}
	if _, err := s.Sign(nil, make([]byte, 20), crypto.SHA1); err == nil {
		t.Error("SHA-1: no error")
	}
	if _, err := s.Sign(nil, make([]byte, 20), crypto.SHA256); err == nil {
		t.Error("short digest: no error")
	}

	csrDER, err := s.CertificateRequest("dev-1")
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil || csr.CheckSignature() != nil || csr.Subject.CommonName != "dev-1" {
		t.Fatalf("CSR: %v", err)
	}

	// The key survives as blobs and serves a TLS client handshake.
	pubBlob, privBlob := s.KeyBlobs()
	s2, err := d.LoadSigner(pubBlob, privBlob)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := s2.SelfSignedCertificate("dev-1", time.Now().Add(-time.Minute), time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if err := cert.CheckSignature(cert.SignatureAlgorithm, cert.RawTBSCertificate, cert.Signature); err != nil {
		t.Fatalf("self-signed certificate: %v", err)
	}
	tlsHandshake(t, tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: s2}, cert)
}

// tlsHandshake runs a TLS 1.3 handshake over a pipe with client
// authentication, the client key being in the TPM.
func tlsHandshake(t *testing.T, clientCert tls.Certificate, want *x509.Certificate) {
	t.Helper()
	srvSigner, srvCert := serverIdentity(t)
	c1, c2 := net.Pipe()
	defer c1.Close()
	defer c2.Close()
	pool := x509.NewCertPool()
	pool.AddCert(want)
	srv := tls.Server(c1, &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{srvCert.Raw}, PrivateKey: srvSigner}},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pool,
		MinVersion:   tls.VersionTLS13,
	})
	done := make(chan error, 1)
	go func() { done <- srv.Handshake() }()
	roots := x509.NewCertPool()
	roots.AddCert(srvCert)
	cli := tls.Client(c2, &tls.Config{
		Certificates: []tls.Certificate{clientCert},
		RootCAs:      roots,
		ServerName:   "broker.test",
		MinVersion:   tls.VersionTLS13,
	})
	if err := cli.Handshake(); err != nil {
		t.Fatalf("client handshake: %v", err)
	}
	if err := <-done; err != nil {
		t.Fatalf("server handshake: %v", err)
	}
	if got := srv.ConnectionState().PeerCertificates; len(got) != 1 || !got[0].Equal(want) {
		t.Error("server did not see the TPM-backed client certificate")
	}
}

// serverIdentity is a software key and self-signed certificate for
// broker.test.
func serverIdentity(t *testing.T) (*ecdsa.PrivateKey, *x509.Certificate) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "broker.test"},
		DNSNames:     []string{"broker.test"},
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return k, cert
}

func TestReadNVMissing(t *testing.T) {
	d := newDevice(t, openSim(t), tpm.Options{EKType: tpm.ECC, SRKType: tpm.ECC})
	if _, err := d.EKCertificate(context.Background(), tpm.RSAEKCertIndex); !errors.Is(err, tpm2.TPMRCHandle) {
		t.Errorf("EK certificate on the simulator (none written): %v, want TPM_RC_HANDLE", err)
	}
}

// TestConcurrentUse signs SAS tokens and ECDSA digests from several
// goroutines on one Device: commands are serialised and transient objects
// never pile up (the simulator has three object slots).
func TestConcurrentUse(t *testing.T) {
	ctx := context.Background()
	d := newDevice(t, openSim(t), tpm.Options{EKType: tpm.ECC, SRKType: tpm.ECC})
	ch := challenge(t, d.EndorsementKey(), d.StorageRootKey())
	if err := d.ActivateAndImport(ctx, ch.AuthenticationKey); err != nil {
		t.Fatal(err)
	}
	s, err := d.NewSigner(ctx)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	errs := make(chan error, 16)
	for i := range 8 {
		go func() {
			token, err := d.SignSAS(ctx, sas.Resource(idScope, "dev-1"), now.Add(time.Duration(i+1)*time.Minute))
			if err == nil {
				err = tpmattest.VerifySAS(token, ch.Key, idScope, "dev-1", now)
			}
			errs <- err
		}()
		go func() {
			digest := sha256.Sum256([]byte{byte(i)})
			sig, err := s.Sign(nil, digest[:], crypto.SHA256)
			if err == nil && !ecdsa.VerifyASN1(s.Public().(*ecdsa.PublicKey), digest[:], sig) {
				err = errors.New("signature does not verify")
			}
			errs <- err
		}()
	}
	for range 16 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}

func TestOpenTCPRefuses(t *testing.T) {
	for _, addr := range []string{"no-port", "127.0.0.1:x", "127.0.0.1:65535"} {
		if _, err := tpm.OpenTCP(addr); err == nil {
			t.Errorf("OpenTCP(%q): no error", addr)
		}
	}
	// Nothing listens on a port just released.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	if _, err := tpm.OpenTCP(addr); err == nil {
		t.Errorf("OpenTCP(%q) with no server: no error", addr)
	}
}
