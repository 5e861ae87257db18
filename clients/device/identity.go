package device

import (
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"
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
	key, err := parseKeyPEM(keyPEM)
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
	chain, err := parseCertsPEM(certPEM)
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

// parseCertsPEM decodes every CERTIFICATE block, in order, and ignores
// other blocks so that a combined certificate-and-key file works.
func parseCertsPEM(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %w", len(certs)+1, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errors.New("no PEM CERTIFICATE block")
	}
	return certs, nil
}

// parseKeyPEM decodes the first private key block of data.
func parseKeyPEM(data []byte) (crypto.Signer, error) {
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return nil, errors.New(`no PEM private key block ("PRIVATE KEY", "EC PRIVATE KEY" or "RSA PRIVATE KEY")`)
		}
		if _, encrypted := b.Headers["DEK-Info"]; encrypted && strings.HasSuffix(b.Type, "PRIVATE KEY") {
			return nil, fmt.Errorf("the %s is encrypted; decrypt it first (openssl pkey -in key -out key.dec)", strings.ToLower(b.Type))
		}
		var key any
		var err error
		switch b.Type {
		case "PRIVATE KEY":
			key, err = x509.ParsePKCS8PrivateKey(b.Bytes)
		case "EC PRIVATE KEY":
			key, err = x509.ParseECPrivateKey(b.Bytes)
		case "RSA PRIVATE KEY":
			key, err = x509.ParsePKCS1PrivateKey(b.Bytes)
		case "ENCRYPTED PRIVATE KEY":
			return nil, errors.New("the private key is encrypted (PKCS #8); decrypt it first (openssl pkey -in key -out key.dec)")
		default:
			continue // CERTIFICATE, EC PARAMETERS, ...
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", b.Type, err)
		}
		s, ok := key.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("%s: a %T cannot sign", b.Type, key)
		}
		return s, nil
	}
}

// samePublicKey compares keys through the Equal method every standard
// library public key type has.
func samePublicKey(a, b crypto.PublicKey) bool {
	eq, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && eq.Equal(b)
}
