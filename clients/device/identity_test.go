package device_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"io"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dpsbroker/dpsbroker/clients/device"
	"github.com/dpsbroker/dpsbroker/provisioning/pkitest"
	"github.com/dpsbroker/dpsbroker/provisioning/wire"
)

// opaqueSigner hides the concrete key type, as an HSM or TPM signer does.
type opaqueSigner struct{ s crypto.Signer }

func (o opaqueSigner) Public() crypto.PublicKey { return o.s.Public() }
func (o opaqueSigner) Sign(r io.Reader, d []byte, opts crypto.SignerOpts) ([]byte, error) {
	return o.s.Sign(r, d, opts)
}

func TestX509Identity(t *testing.T) {
	ca := pkitest.NewRoot(t).Intermediate(t, "factory")
	dev := ca.Leaf(t, "dev-1")
	other := ca.Leaf(t, "dev-2")

	tc, err := device.X509Identity(dev.Chain, opaqueSigner{dev.Key})
	if err != nil {
		t.Fatal(err)
	}
	if len(tc.Certificate) != 2 || tc.Leaf != dev.Cert {
		t.Errorf("identity has %d certificates, leaf %v", len(tc.Certificate), tc.Leaf.Subject)
	}
	if _, ok := tc.PrivateKey.(opaqueSigner); !ok {
		t.Errorf("private key is %T, want the signer as given", tc.PrivateKey)
	}

	for _, tt := range []struct {
		name  string
		chain []*x509.Certificate
		key   crypto.Signer
		want  string
	}{
		{"empty chain", nil, dev.Key, "empty"},
		{"no key", dev.Chain, nil, "no private key"},
		{"nil certificate", []*x509.Certificate{dev.Cert, nil}, dev.Key, "nil"},
		{"someone else's key", dev.Chain, other.Key, "does not belong"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := device.X509Identity(tt.chain, tt.key); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
}

func TestLoadX509Identity(t *testing.T) {
	ca := pkitest.NewRoot(t).Intermediate(t, "factory")
	ec := ca.Leaf(t, "dev-ec")
	rsaDev := ca.Leaf(t, "dev-rsa", pkitest.Key(pkitest.RSA2048))
	dir := t.TempDir()
	write := fileWriter(t, dir)
	ecDER, err := x509.MarshalECPrivateKey(ec.Key.(*ecdsa.PrivateKey))
	if err != nil {
		t.Fatal(err)
	}
	pkcs1 := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rsaDev.Key.(*rsa.PrivateKey))})
	sec1 := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: ecDER})
	ecParams := pem.EncodeToMemory(&pem.Block{Type: "EC PARAMETERS", Bytes: []byte{6, 8, 42, 134, 72, 206, 61, 3, 1, 7}})

	ecChain := write("ec.pem", ec.ChainPEM())
	// Issuer first: the leaf is found by its key, not by its place.
	reversed := write("reversed.pem", pkitest.CertPEM(ec.Chain[1], ec.Chain[0]))
	combined := write("combined.pem", append(ec.ChainPEM(), ec.KeyPEM()...))

	ok := []struct {
		name, cert, key, cn string
	}{
		{"PKCS#8 EC", ecChain, write("ec.key", ec.KeyPEM()), "dev-ec"},
		{"SEC 1 EC with parameters block", ecChain, write("ec-sec1.key", append(ecParams, sec1...)), "dev-ec"},
		{"PKCS#1 RSA", write("rsa.pem", rsaDev.ChainPEM()), write("rsa.key", pkcs1), "dev-rsa"},
		{"leaf not first", reversed, write("ec2.key", ec.KeyPEM()), "dev-ec"},
		{"key in the certificate file", combined, "", "dev-ec"},
	}
	for _, tt := range ok {
		t.Run(tt.name, func(t *testing.T) {
			tc, err := device.LoadX509Identity(tt.cert, tt.key)
			if err != nil {
				t.Fatal(err)
			}
			if tc.Leaf.Subject.CommonName != tt.cn || len(tc.Certificate) != 2 {
				t.Errorf("leaf %q, %d certificates", tc.Leaf.Subject.CommonName, len(tc.Certificate))
			}
			if c, _ := x509.ParseCertificate(tc.Certificate[1]); c == nil || !c.IsCA {
				t.Errorf("second certificate is not the intermediate")
			}
		})
	}

	encrypted := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Headers: map[string]string{
		"Proc-Type": "4,ENCRYPTED", "DEK-Info": "AES-128-CBC,00000000000000000000000000000000"}, Bytes: ecDER})
	bad := []struct {
		name, cert, key, want string
	}{
		{"missing certificate file", filepath.Join(dir, "nope.pem"), write("k1.key", ec.KeyPEM()), "read certificate"},
		{"missing key file", ecChain, filepath.Join(dir, "nope.key"), "read key"},
		{"no certificate block", write("empty.pem", ec.KeyPEM()), write("k2.key", ec.KeyPEM()), "no PEM CERTIFICATE"},
		{"no key block", ecChain, write("nokey.key", ec.ChainPEM()), "no PEM private key"},
		{"garbage certificate", write("garbage.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("x")})),
			write("k3.key", ec.KeyPEM()), "certificate 1"},
		{"encrypted PKCS#8", ecChain, write("enc8.key", pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: []byte("x")})), "encrypted"},
		{"encrypted legacy PEM", ecChain, write("enc.key", encrypted), "encrypted"},
		{"key of another device", ecChain, write("rsa2.key", pkcs1), "matches none"},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			_, err := device.LoadX509Identity(tt.cert, tt.key)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
}

// A key that is only a crypto.Signer (HSM, TPM) signs the TLS handshake.
func TestProvisionWithOpaqueSigner(t *testing.T) {
	b := newTestBroker(t, func(int, wire.Request, []byte) []reply {
		return []reply{{status: 200, body: assignedBody("dev-hsm")}}
	})
	dev := b.devices.Leaf(t, "dev-hsm")
	tc, err := device.X509Identity(dev.Chain, opaqueSigner{dev.Key})
	if err != nil {
		t.Fatal(err)
	}
	cfg := b.config(t, "dev-hsm")
	cfg.Certificate = &tc
	res, err := device.Provision(testContext(t), cfg)
	wantAssigned(t, res, err)
	if got := b.r.snapshot().peerCN; got != "dev-hsm" {
		t.Errorf("broker saw CN %q", got)
	}
}
