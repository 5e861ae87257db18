package pkitest

import (
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"

	"github.com/dpsbroker/dpsbroker/provisioning"
)

// CertPEM encodes certificates as consecutive PEM "CERTIFICATE" blocks.
func CertPEM(certs ...*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}

// KeyPEM encodes a private key as a PKCS #8 "PRIVATE KEY" block. It fails
// for keys PKCS #8 cannot hold, such as a hardware-backed crypto.Signer.
func KeyPEM(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("pkitest: encode key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// ParseCertsPEM decodes every CERTIFICATE block of data, in order
// (provisioning.ParseCertificatesPEM).
func ParseCertsPEM(data []byte) ([]*x509.Certificate, error) {
	certs, err := provisioning.ParseCertificatesPEM(data)
	if err != nil {
		return nil, fmt.Errorf("pkitest: %w", err)
	}
	return certs, nil
}

// ParseKeyPEM decodes the first private key block of data: PKCS #8,
// PKCS #1 (RSA) or SEC 1 (EC) (provisioning.ParsePrivateKeyPEM).
func ParseKeyPEM(data []byte) (crypto.Signer, error) {
	key, err := provisioning.ParsePrivateKeyPEM(data)
	if err != nil {
		return nil, fmt.Errorf("pkitest: %w", err)
	}
	return key, nil
}

// CertPEM returns the CA certificate as PEM.
func (c *CA) CertPEM() []byte { return CertPEM(c.Cert) }

// KeyPEM returns the CA key as PKCS #8 PEM, or nil when the key was given
// with WithSigner and cannot be exported.
func (c *CA) KeyPEM() []byte { b, _ := KeyPEM(c.Key); return b }

// CertPEM returns the leaf certificate alone as PEM.
func (l *Leaf) CertPEM() []byte { return CertPEM(l.Cert) }

// ChainPEM returns the leaf followed by its intermediates as PEM: the
// content of a device's certificate file.
func (l *Leaf) ChainPEM() []byte { return CertPEM(l.Chain...) }

// KeyPEM returns the leaf key as PKCS #8 PEM, or nil when the key was given
// with WithSigner and cannot be exported.
func (l *Leaf) KeyPEM() []byte { b, _ := KeyPEM(l.Key); return b }

// LoadCA rebuilds a CA from PEM, for example a development PKI written to
// disk on a previous run. certPEM holds the CA certificate first, then the
// certificates above it; a self-signed certificate among them becomes the
// root and is left out of Chain. The key must match the CA certificate.
func LoadCA(certPEM, keyPEM []byte) (*CA, error) {
	certs, err := ParseCertsPEM(certPEM)
	if err != nil {
		return nil, err
	}
	key, err := ParseKeyPEM(keyPEM)
	if err != nil {
		return nil, err
	}
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(certs[0].PublicKey) {
		return nil, errors.New("pkitest: the key does not belong to the CA certificate")
	}
	if !certs[0].IsCA {
		return nil, errors.New("pkitest: the certificate is not a CA")
	}
	ca := &CA{Cert: certs[0], Key: key}
	for _, c := range certs {
		if isSelfSigned(c) {
			ca.root = c
			break
		}
		ca.Chain = append(ca.Chain, c)
	}
	return ca, nil
}

func isSelfSigned(c *x509.Certificate) bool {
	return string(c.RawSubject) == string(c.RawIssuer) && c.CheckSignatureFrom(c) == nil
}
