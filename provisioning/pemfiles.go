package provisioning

import (
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
)

// ParseCertificatesPEM decodes every CERTIFICATE block of data, in order,
// and ignores other blocks, so that a combined certificate-and-key file
// works: the form of device certificate files and CA bundles.
func ParseCertificatesPEM(data []byte) ([]*x509.Certificate, error) {
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

// ParsePrivateKeyPEM decodes the first private key block of data: PKCS #8,
// SEC 1 (EC) or PKCS #1 (RSA). Encrypted keys are refused with a hint to
// decrypt them first.
func ParsePrivateKeyPEM(data []byte) (crypto.Signer, error) {
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
