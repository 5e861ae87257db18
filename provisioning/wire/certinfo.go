package wire

import (
	"crypto/sha1" //nolint:gosec // DPS reports SHA-1 thumbprints for display; never used for trust.
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"strings"
	"time"
)

// X509CertificateInfo is the DPS description of a certificate, as returned in
// registration results and on enrollment reads ("info").
type X509CertificateInfo struct {
	SubjectName      string    `json:"subjectName"`
	SHA1Thumbprint   string    `json:"sha1Thumbprint"`
	SHA256Thumbprint string    `json:"sha256Thumbprint"`
	IssuerName       string    `json:"issuerName"`
	NotBeforeUTC     time.Time `json:"notBeforeUtc"`
	NotAfterUTC      time.Time `json:"notAfterUtc"`
	SerialNumber     string    `json:"serialNumber"`
	Version          int       `json:"version"`
}

// CertificateInfo describes c in the DPS shape. Thumbprints are upper-case
// hex, as Azure prints them.
func CertificateInfo(c *x509.Certificate) *X509CertificateInfo {
	s1 := sha1.Sum(c.Raw) //nolint:gosec // display thumbprint only
	s256 := sha256.Sum256(c.Raw)
	return &X509CertificateInfo{
		SubjectName:      c.Subject.String(),
		SHA1Thumbprint:   strings.ToUpper(hex.EncodeToString(s1[:])),
		SHA256Thumbprint: strings.ToUpper(hex.EncodeToString(s256[:])),
		IssuerName:       c.Issuer.String(),
		NotBeforeUTC:     c.NotBefore.UTC(),
		NotAfterUTC:      c.NotAfter.UTC(),
		SerialNumber:     strings.ToUpper(c.SerialNumber.Text(16)),
		Version:          c.Version,
	}
}
