package pkitest

import (
	"crypto"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"math/big"
	"net"
	"net/url"
	"time"
)

// KeyAlgorithm selects the key type and size of a certificate's key.
type KeyAlgorithm int

// Key algorithms. ECDSAP256 is the default: it is what devices use and it is
// fast to generate.
const (
	ECDSAP256 KeyAlgorithm = iota
	ECDSAP384
	Ed25519
	RSA1024 // too weak: for testing refusals
	RSA2048
	RSA3072
)

// String names the algorithm the way people say it.
func (a KeyAlgorithm) String() string {
	switch a {
	case ECDSAP256:
		return "ECDSA P-256"
	case ECDSAP384:
		return "ECDSA P-384"
	case Ed25519:
		return "Ed25519"
	case RSA1024:
		return "RSA-1024"
	case RSA2048:
		return "RSA-2048"
	case RSA3072:
		return "RSA-3072"
	}
	return "unknown"
}

// Option changes one property of a certificate being issued. Options apply
// in order, so a later option wins over an earlier one.
type Option func(*options)

type options struct {
	key        KeyAlgorithm
	signer     crypto.Signer
	notBefore  time.Time
	notAfter   time.Time
	serial     *big.Int
	subject    *pkix.Name
	dnsNames   []string
	ips        []net.IP
	uris       []*url.URL
	emails     []string
	keyUsage   *x509.KeyUsage
	extUsage   *[]x509.ExtKeyUsage
	isCA       *bool
	maxPathLen *int
	permDNS    []string
	exclDNS    []string
	sha1       bool
	wrongKey   bool
	critical   bool
	template   []func(*x509.Certificate)
}

// Key selects the key algorithm of the certificate (default ECDSAP256).
func Key(alg KeyAlgorithm) Option { return func(o *options) { o.key = alg; o.signer = nil } }

// WithSigner uses an existing key instead of generating one. Its public
// key goes into the certificate.
func WithSigner(s crypto.Signer) Option { return func(o *options) { o.signer = s } }

// Validity sets the validity period exactly.
func Validity(notBefore, notAfter time.Time) Option {
	return func(o *options) { o.notBefore, o.notAfter = notBefore, notAfter }
}

// ValidFor makes the certificate valid from an hour ago for d.
func ValidFor(d time.Duration) Option {
	return func(o *options) {
		now := time.Now()
		o.notBefore, o.notAfter = now.Add(-time.Hour), now.Add(d)
	}
}

// Expired makes the certificate's validity end an hour ago.
func Expired() Option {
	return func(o *options) {
		now := time.Now()
		o.notBefore, o.notAfter = now.Add(-48*time.Hour), now.Add(-time.Hour)
	}
}

// NotYetValid makes the certificate's validity start in an hour.
func NotYetValid() Option {
	return func(o *options) {
		now := time.Now()
		o.notBefore, o.notAfter = now.Add(time.Hour), now.Add(48*time.Hour)
	}
}

// Serial sets the serial number (default: 128 random bits).
func Serial(n *big.Int) Option { return func(o *options) { o.serial = n } }

// Subject replaces the whole subject name. The common name given to the
// issuing call is used when name.CommonName is empty.
func Subject(name pkix.Name) Option { return func(o *options) { o.subject = &name } }

// DNSNames adds DNS subject alternative names.
func DNSNames(names ...string) Option {
	return func(o *options) { o.dnsNames = append(o.dnsNames, names...) }
}

// IPAddresses adds IP subject alternative names.
func IPAddresses(ips ...net.IP) Option { return func(o *options) { o.ips = append(o.ips, ips...) } }

// URIs adds URI subject alternative names.
func URIs(uris ...*url.URL) Option { return func(o *options) { o.uris = append(o.uris, uris...) } }

// EmailAddresses adds e-mail subject alternative names.
func EmailAddresses(addrs ...string) Option {
	return func(o *options) { o.emails = append(o.emails, addrs...) }
}

// KeyUsage sets the key usage bits exactly (0 leaves the extension out).
func KeyUsage(ku x509.KeyUsage) Option { return func(o *options) { o.keyUsage = &ku } }

// ExtKeyUsages sets the extended key usages exactly; none leaves the
// extension out.
func ExtKeyUsages(ekus ...x509.ExtKeyUsage) Option {
	return func(o *options) { o.extUsage = &ekus }
}

// ServerAuthOnly gives a leaf the serverAuth usage and not clientAuth, the
// classic mistake of reusing a server certificate on a device.
func ServerAuthOnly() Option { return ExtKeyUsages(x509.ExtKeyUsageServerAuth) }

// AsCA marks a leaf CA:TRUE (a defect for a device certificate), or makes a
// CA certificate CA:FALSE when ca is false (a defect for an issuer).
func AsCA(ca bool) Option { return func(o *options) { o.isCA = &ca } }

// MaxPathLen sets the path length constraint of a CA certificate. Zero means
// "may issue leaves only"; a negative value removes the constraint.
func MaxPathLen(n int) Option { return func(o *options) { o.maxPathLen = &n } }

// PermittedDNSDomains adds a name constraint to a CA certificate: the CA may
// only issue names in these domains.
func PermittedDNSDomains(domains ...string) Option {
	return func(o *options) { o.permDNS = append(o.permDNS, domains...) }
}

// ExcludedDNSDomains adds an excluded-subtrees name constraint to a CA.
func ExcludedDNSDomains(domains ...string) Option {
	return func(o *options) { o.exclDNS = append(o.exclDNS, domains...) }
}

// SHA1Signature makes the issuer sign the certificate with SHA-1 (RSA or
// ECDSA issuers; Go still signs with SHA-1 but refuses to verify it).
func SHA1Signature() Option { return func(o *options) { o.sha1 = true } }

// SignedByWrongKey keeps the issuer's name in the certificate but signs it
// with an unrelated key of the same algorithm, so the signature does not
// verify against the issuer certificate.
func SignedByWrongKey() Option { return func(o *options) { o.wrongKey = true } }

// UnknownCriticalExtension adds a critical extension with a private OID,
// which a verifier must refuse.
func UnknownCriticalExtension() Option { return func(o *options) { o.critical = true } }

// Template runs f on the certificate template just before signing: the
// escape hatch for anything the other options do not cover.
func Template(f func(*x509.Certificate)) Option {
	return func(o *options) { o.template = append(o.template, f) }
}

// oidPrivateCritical is under the IANA example arc (1.3.6.1.4.1.32473), so it
// never collides with a real extension.
var oidPrivateCritical = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 32473, 7, 1}

func newOptions(opts []Option) *options {
	o := &options{}
	for _, opt := range opts {
		if opt != nil {
			opt(o)
		}
	}
	return o
}
