package device

import (
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"

	"github.com/dpsbroker/dpsbroker/provisioning"
)

// X509Identity builds the TLS client certificate of an X.509 device from
// its chain (the leaf first, then the intermediates to present; the root
// may be left out) and the leaf's private key. key may be any
// crypto.Signer, so a key held in an HSM or a TPM works as well as one in
// memory. It fails when the chain is empty, and with ErrKeyMismatch when
// key is not the leaf's key.
func X509Identity(chain []*x509.Certificate, key crypto.Signer) (tls.Certificate, error) {
	if len(chain) == 0 {
		return tls.Certificate{}, errors.New("device: identity: empty certificate chain")
	}
	if key == nil {
		return tls.Certificate{}, errors.New("device: identity: no private key")
	}
	for i, c := range chain {
		if c == nil {
			return tls.Certificate{}, fmt.Errorf("device: identity: certificate %d is nil", i+1)
		}
	}
	if !samePublicKey(chain[0].PublicKey, key.Public()) {
		return tls.Certificate{}, fmt.Errorf("%w: leaf %q", ErrKeyMismatch, chain[0].Subject.CommonName)
	}
	tc := tls.Certificate{PrivateKey: key, Leaf: chain[0]}
	for _, c := range chain {
		tc.Certificate = append(tc.Certificate, c.Raw)
	}
	return tc, nil
}

// LoadX509Identity reads a device identity from PEM files: certFile holds
// the leaf and its intermediates, keyFile the leaf's private key (PKCS #8,
// SEC 1 "EC PRIVATE KEY" or PKCS #1 "RSA PRIVATE KEY"). An empty keyFile
// means the key is in certFile too. The certificate whose public key
// matches the key is taken as the leaf wherever it appears in the file,
// and the others follow it in file order. Encrypted keys are refused with
// a clear error; decrypt them first.
func LoadX509Identity(certFile, keyFile string) (tls.Certificate, error) {
	chain, certPEM, err := readCertChain(certFile)
	if err != nil {
		return tls.Certificate{}, err
	}
	keyPEM, keyName := certPEM, certFile
	if keyFile != "" {
		if keyPEM, err = os.ReadFile(keyFile); err != nil {
			return tls.Certificate{}, fmt.Errorf("device: read key: %w", err)
		}
		keyName = keyFile
	}
	key, err := provisioning.ParsePrivateKeyPEM(keyPEM)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("device: %s: %w", keyName, err)
	}
	ordered, ok := leafFirst(chain, key.Public())
	if !ok {
		return tls.Certificate{}, fmt.Errorf("%w: the key in %s matches none of the %d certificate(s) in %s", ErrKeyMismatch, keyName, len(chain), certFile)
	}
	return X509Identity(ordered, key)
}

// readCertChain reads the certificates of the PEM file certFile, in file
// order, and returns the file's bytes too (they may hold the key).
func readCertChain(certFile string) ([]*x509.Certificate, []byte, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, nil, fmt.Errorf("device: read certificate: %w", err)
	}
	chain, err := provisioning.ParseCertificatesPEM(certPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("device: %s: %w", certFile, err)
	}
	return chain, certPEM, nil
}

// leafFirst puts the certificate of pub first and the others after it in
// their order, so that a file listing the chain root-first still works.
// ok is false when no certificate is pub's.
func leafFirst(chain []*x509.Certificate, pub crypto.PublicKey) (ordered []*x509.Certificate, ok bool) {
	for i, c := range chain {
		if samePublicKey(c.PublicKey, pub) {
			ordered = make([]*x509.Certificate, 0, len(chain))
			ordered = append(ordered, c)
			ordered = append(ordered, chain[:i]...)
			return append(ordered, chain[i+1:]...), true
		}
	}
	return nil, false
}

// samePublicKey compares keys through the Equal method every standard
// library public key type has.
func samePublicKey(a, b crypto.PublicKey) bool {
	eq, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && eq.Equal(b)
}
