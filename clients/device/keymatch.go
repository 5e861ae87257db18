package device

import (
	"crypto"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
)

// ErrKeyMismatch reports a private key that does not belong to the
// device certificate: a certificate issued for another key (another
// device's CSR, an old key), or the wrong key file or TPM key. It is
// found before any connection is made.
var ErrKeyMismatch = errors.New("device: the private key does not belong to the certificate")

// LoadX509IdentityWithKey reads the device's certificate chain from the
// PEM file certFile and pairs it with key, a private key held elsewhere:
// a TPM (clients/tpm.Signer), an HSM, or memory. The certificate whose
// public key is key's is the leaf wherever it appears in the file; the
// others follow in file order. When none matches, the error wraps
// ErrKeyMismatch and names both public key fingerprints, so that a
// certificate issued for another key is caught before connecting.
func LoadX509IdentityWithKey(certFile string, key crypto.Signer) (tls.Certificate, error) {
	if key == nil {
		return tls.Certificate{}, errors.New("device: identity: no private key")
	}
	chain, _, err := readCertChain(certFile)
	if err != nil {
		return tls.Certificate{}, err
	}
	ordered, ok := leafFirst(chain, key.Public())
	if !ok {
		return tls.Certificate{}, fmt.Errorf("%w: the key's public key (%s) is in none of the %d certificate(s) in %s (leaf %q has %s); was the certificate issued for this key's CSR?",
			ErrKeyMismatch, KeyFingerprint(key.Public()), len(chain), certFile, chain[0].Subject.CommonName, KeyFingerprint(chain[0].PublicKey))
	}
	return X509Identity(ordered, key)
}

// KeyFingerprint is "sha256:" and the hex SHA-256 of a public key's
// DER SubjectPublicKeyInfo (what openssl pkey -pubout | sha256sum hashes
// after base64 decoding), for telling keys apart in messages. It is
// public information.
func KeyFingerprint(pub crypto.PublicKey) string {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return fmt.Sprintf("unknown %T key", pub)
	}
	sum := sha256.Sum256(der)
	return "sha256:" + hex.EncodeToString(sum[:])
}
