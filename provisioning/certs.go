package provisioning

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"

	"github.com/dpsbroker/dpsbroker/provisioning/wire"
)

// MaxCertificateLen bounds one certificate field (PEM or base64 DER). A
// realistic RSA-4096 certificate with long extensions is well under 8 KiB;
// the bound keeps a hostile request from making us parse megabytes.
const MaxCertificateLen = 32 << 10

// ErrBadCertificate is wrapped by every ParseCertificate failure, so callers
// can tell a client's bad input from an internal fault.
var ErrBadCertificate = errors.New("bad certificate")

// ParseCertificate parses one certificate given as PEM (exactly one
// CERTIFICATE block and nothing else but white space) or as base64 of the
// DER encoding, the two forms the DPS service API accepts.
//
// Errors never quote the input: a user who pastes a key bundle by mistake
// must not find the key echoed in a response or a log.
func ParseCertificate(s string) (*x509.Certificate, error) {
	if len(s) > MaxCertificateLen {
		return nil, fmt.Errorf("%w: %d bytes, the limit is %d", ErrBadCertificate, len(s), MaxCertificateLen)
	}
	trimmed := strings.TrimSpace(s)
	if trimmed == "" {
		return nil, fmt.Errorf("%w: empty", ErrBadCertificate)
	}
	var der []byte
	if strings.Contains(trimmed, "-----BEGIN") {
		d, err := pemCertificate([]byte(trimmed))
		if err != nil {
			return nil, err
		}
		der = d
	} else {
		d, err := base64.StdEncoding.DecodeString(stripSpace(trimmed))
		if err != nil {
			return nil, fmt.Errorf("%w: neither PEM nor valid base64 DER", ErrBadCertificate)
		}
		der = d
	}
	// ParseCertificates (plural) accepts concatenated DER, which lets us
	// say "two certificates" instead of a puzzling "trailing data".
	certs, err := x509.ParseCertificates(der)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadCertificate, err)
	}
	switch len(certs) {
	case 0:
		return nil, fmt.Errorf("%w: no certificate", ErrBadCertificate)
	case 1:
		return certs[0], nil
	default:
		return nil, fmt.Errorf("%w: contains %d certificates, exactly one is allowed", ErrBadCertificate, len(certs))
	}
}

// pemCertificate returns the DER of the single CERTIFICATE block in b.
func pemCertificate(b []byte) ([]byte, error) {
	if i := bytes.Index(b, []byte("-----BEGIN")); i > 0 {
		return nil, fmt.Errorf("%w: unexpected text before the PEM block", ErrBadCertificate)
	}
	var der []byte
	n := 0
	rest := b
	for len(bytes.TrimSpace(rest)) > 0 {
		block, r := pem.Decode(rest)
		if block == nil {
			if n == 0 {
				return nil, fmt.Errorf("%w: malformed PEM", ErrBadCertificate)
			}
			return nil, fmt.Errorf("%w: unexpected text after the PEM block", ErrBadCertificate)
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("%w: contains a PEM block of type %q; only one CERTIFICATE block is allowed", ErrBadCertificate, block.Type)
		}
		n++
		der = block.Bytes
		rest = r
	}
	if n > 1 {
		return nil, fmt.Errorf("%w: contains %d certificates, exactly one is allowed", ErrBadCertificate, n)
	}
	return der, nil
}

func stripSpace(s string) string {
	if !strings.ContainsAny(s, " \t\r\n") {
		return s
	}
	return strings.Map(func(r rune) rune {
		switch r {
		case ' ', '\t', '\r', '\n':
			return -1
		}
		return r
	}, s)
}

// Thumbprint is the SHA-256 of the certificate's DER encoding: the key by
// which stores index enrollments and the evaluator matches chains.
func Thumbprint(c *x509.Certificate) [32]byte { return sha256.Sum256(c.Raw) }

// ThumbprintHex formats a thumbprint the way Azure prints it: upper-case
// hex without separators.
func ThumbprintHex(t [32]byte) string { return strings.ToUpper(hex.EncodeToString(t[:])) }

// fillInfo sets c.Info from the certificate, or clears it when the
// certificate does not parse: a stale description of another certificate
// would be worse than none.
func fillInfo(c *X509CertificateWithInfo) {
	if c == nil {
		return
	}
	cert, err := ParseCertificate(c.Certificate)
	if err != nil {
		c.Info = nil
		return
	}
	c.Info = wire.CertificateInfo(cert)
}

func (x *X509Certificates) fillInfo() {
	if x == nil {
		return
	}
	fillInfo(x.Primary)
	fillInfo(x.Secondary)
}

// FillInfo sets the info of every certificate of the enrollment, as the
// service does on read.
func (e *IndividualEnrollment) FillInfo() {
	if x := e.Attestation.X509; x != nil {
		x.ClientCertificates.fillInfo()
		x.SigningCertificates.fillInfo()
	}
}

// FillInfo sets the info of every signing certificate of the group, as the
// service does on read.
func (g *EnrollmentGroup) FillInfo() {
	if x := g.Attestation.X509; x != nil {
		x.ClientCertificates.fillInfo()
		x.SigningCertificates.fillInfo()
	}
}

// FillInfo sets the read-only description fields (subject, thumbprint,
// expiry) from the certificate. It leaves them unchanged and returns the
// error when the certificate does not parse.
func (c *CACertificate) FillInfo() error {
	cert, err := ParseCertificate(c.Certificate)
	if err != nil {
		return err
	}
	c.Subject = cert.Subject.String()
	c.Thumbprint = ThumbprintHex(Thumbprint(cert))
	exp := cert.NotAfter.UTC()
	c.Expiry = &exp
	return nil
}

// thumbprints returns the SHA-256 thumbprints of the parseable certificates
// of x, primary first; validated entries have no unparseable ones.
func (x *X509Certificates) thumbprints() [][32]byte {
	if x == nil {
		return nil
	}
	var out [][32]byte
	for _, c := range []*X509CertificateWithInfo{x.Primary, x.Secondary} {
		if c == nil {
			continue
		}
		if cert, err := ParseCertificate(c.Certificate); err == nil {
			out = append(out, Thumbprint(cert))
		}
	}
	return out
}

// CertificateThumbprints returns the SHA-256 thumbprints of the group's
// signing certificates (primary first), by which stores index groups. CA
// references are not included: they name a CACertificate that the store
// resolves (see CAReferenceNames).
func (g *EnrollmentGroup) CertificateThumbprints() [][32]byte {
	if g.Attestation.X509 == nil {
		return nil
	}
	return g.Attestation.X509.SigningCertificates.thumbprints()
}

// CAReferenceNames returns the CA certificate names the group references,
// primary first, without empty ones.
func (g *EnrollmentGroup) CAReferenceNames() []string {
	if g.Attestation.X509 == nil || g.Attestation.X509.CAReferences == nil {
		return nil
	}
	r := g.Attestation.X509.CAReferences
	var out []string
	for _, n := range []string{r.Primary, r.Secondary} {
		if n != "" {
			out = append(out, n)
		}
	}
	return out
}

// ClientCertificateThumbprints returns the SHA-256 thumbprints of the
// enrollment's client certificates, primary first. A presented leaf must
// equal one of them.
func (e *IndividualEnrollment) ClientCertificateThumbprints() [][32]byte {
	if e.Attestation.X509 == nil {
		return nil
	}
	return e.Attestation.X509.ClientCertificates.thumbprints()
}
