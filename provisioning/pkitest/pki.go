package pkitest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"net"
	"time"
)

// Default lifetimes. Long enough that no test run ever meets them; use
// Validity or ValidFor for anything else.
const (
	DefaultCAValidity   = 10 * 365 * 24 * time.Hour
	DefaultLeafValidity = 365 * 24 * time.Hour
)

// backdate moves NotBefore into the past so that a verifier whose clock is a
// little behind still accepts a certificate issued a moment ago.
const backdate = time.Hour

// CA is a certificate authority held in memory: a certificate and the key
// that signs with it.
type CA struct {
	// Cert is the CA's certificate.
	Cert *x509.Certificate
	// Key signs what the CA issues.
	Key crypto.Signer
	// Chain is Cert followed by the intermediates above it, up to but
	// excluding the root: exactly what a leaf of this CA appends to its own
	// certificate. Empty for a root.
	Chain []*x509.Certificate

	root   *x509.Certificate
	pooled bool // draw RSA keys from the shared test pool (tests only)
}

// Leaf is an end-entity certificate with its key.
type Leaf struct {
	// Cert is the leaf certificate.
	Cert *x509.Certificate
	// Key is the leaf's private key.
	Key crypto.Signer
	// Chain is the leaf followed by the intermediates of its issuer up to but
	// excluding the root: what a device presents in TLS.
	Chain []*x509.Certificate
	// Root is the self-signed certificate at the top of the hierarchy (the
	// leaf itself when it is self-signed).
	Root *x509.Certificate
}

// NewRootCA creates a self-signed root CA with a fresh key. It is the
// runtime constructor (no testing.TB); NewRoot is the test wrapper.
func NewRootCA(cn string, opts ...Option) (*CA, error) {
	return newRoot(cn, false, opts)
}

func newRoot(cn string, pooled bool, opts []Option) (*CA, error) {
	o := newOptions(opts)
	key, err := o.key.generate(o.signer, pooled)
	if err != nil {
		return nil, err
	}
	tpl, err := template(cn, o, true)
	if err != nil {
		return nil, err
	}
	cert, err := sign(tpl, nil, key, key, o, pooled)
	if err != nil {
		return nil, fmt.Errorf("pkitest: root %q: %w", cn, err)
	}
	return &CA{Cert: cert, Key: key, root: cert, pooled: pooled}, nil
}

// NewIntermediate issues a subordinate CA certificate under c.
func (c *CA) NewIntermediate(cn string, opts ...Option) (*CA, error) {
	o := newOptions(opts)
	key, err := o.key.generate(o.signer, c.pooled)
	if err != nil {
		return nil, err
	}
	tpl, err := template(cn, o, true)
	if err != nil {
		return nil, err
	}
	cert, err := sign(tpl, c, key, c.Key, o, c.pooled)
	if err != nil {
		return nil, fmt.Errorf("pkitest: intermediate %q: %w", cn, err)
	}
	chain := append([]*x509.Certificate{cert}, c.Chain...)
	return &CA{Cert: cert, Key: key, Chain: chain, root: c.root, pooled: c.pooled}, nil
}

// NewLeaf issues an end-entity certificate for a device: subject CN cn,
// digitalSignature, clientAuth.
func (c *CA) NewLeaf(cn string, opts ...Option) (*Leaf, error) {
	o := newOptions(opts)
	key, err := o.key.generate(o.signer, c.pooled)
	if err != nil {
		return nil, err
	}
	tpl, err := template(cn, o, false)
	if err != nil {
		return nil, err
	}
	cert, err := sign(tpl, c, key, c.Key, o, c.pooled)
	if err != nil {
		return nil, fmt.Errorf("pkitest: leaf %q: %w", cn, err)
	}
	chain := append([]*x509.Certificate{cert}, c.Chain...)
	return &Leaf{Cert: cert, Key: key, Chain: chain, Root: c.root}, nil
}

// NewServerLeaf issues a TLS server certificate (serverAuth) for hosts,
// each a DNS name or an IP address. With no hosts it covers localhost,
// 127.0.0.1 and ::1. The first host is the subject CN.
func (c *CA) NewServerLeaf(hosts []string, opts ...Option) (*Leaf, error) {
	if len(hosts) == 0 {
		hosts = []string{"localhost", "127.0.0.1", "::1"}
	}
	var dns []string
	var ips []net.IP
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			ips = append(ips, ip)
		} else {
			dns = append(dns, h)
		}
	}
	base := []Option{
		DNSNames(dns...), IPAddresses(ips...),
		ExtKeyUsages(x509.ExtKeyUsageServerAuth),
	}
	return c.NewLeaf(hosts[0], append(base, opts...)...)
}

// NewSelfSigned creates a self-signed end-entity certificate, as used with
// individual enrollments.
func NewSelfSigned(cn string, opts ...Option) (*Leaf, error) {
	return newSelfSigned(cn, false, opts)
}

func newSelfSigned(cn string, pooled bool, opts []Option) (*Leaf, error) {
	o := newOptions(opts)
	key, err := o.key.generate(o.signer, pooled)
	if err != nil {
		return nil, err
	}
	tpl, err := template(cn, o, false)
	if err != nil {
		return nil, err
	}
	cert, err := sign(tpl, nil, key, key, o, pooled)
	if err != nil {
		return nil, fmt.Errorf("pkitest: self-signed %q: %w", cn, err)
	}
	return &Leaf{Cert: cert, Key: key, Chain: []*x509.Certificate{cert}, Root: cert}, nil
}

// Root returns the self-signed certificate at the top of c's hierarchy
// (nil for a CA loaded without its root).
func (c *CA) Root() *x509.Certificate { return c.root }

// Pool returns a pool holding only c's root: what a verifier trusts.
func (c *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	if c.root != nil {
		p.AddCert(c.root)
	}
	return p
}

// TLSCertificate returns the leaf with its chain and key for tls.Config.
func (l *Leaf) TLSCertificate() tls.Certificate {
	tc := tls.Certificate{PrivateKey: l.Key, Leaf: l.Cert}
	for _, c := range l.Chain {
		tc.Certificate = append(tc.Certificate, c.Raw)
	}
	return tc
}

// template fills the certificate fields that options describe. Signing
// details (issuer, SHA-1, wrong key) are left to sign.
func template(cn string, o *options, ca bool) (*x509.Certificate, error) {
	serial := o.serial
	if serial == nil {
		var err error
		if serial, err = randomSerial(); err != nil {
			return nil, err
		}
	}
	subject := pkix.Name{CommonName: cn}
	if o.subject != nil {
		subject = *o.subject
		if subject.CommonName == "" {
			subject.CommonName = cn
		}
	}
	now := time.Now()
	notBefore, notAfter := o.notBefore, o.notAfter
	if notBefore.IsZero() {
		notBefore = now.Add(-backdate)
	}
	if notAfter.IsZero() {
		if ca {
			notAfter = now.Add(DefaultCAValidity)
		} else {
			notAfter = now.Add(DefaultLeafValidity)
		}
	}
	tpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               subject,
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		BasicConstraintsValid: true,
		DNSNames:              o.dnsNames,
		IPAddresses:           o.ips,
		URIs:                  o.uris,
		EmailAddresses:        o.emails,
		PermittedDNSDomains:   o.permDNS,
		ExcludedDNSDomains:    o.exclDNS,
	}
	isCA := ca
	if o.isCA != nil {
		isCA = *o.isCA
	}
	tpl.IsCA = isCA
	if isCA {
		tpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature
	} else {
		tpl.KeyUsage = x509.KeyUsageDigitalSignature
		tpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	if o.keyUsage != nil {
		tpl.KeyUsage = *o.keyUsage
	}
	if o.extUsage != nil {
		tpl.ExtKeyUsage = *o.extUsage
	}
	if o.maxPathLen != nil {
		tpl.MaxPathLen = *o.maxPathLen
		tpl.MaxPathLenZero = *o.maxPathLen == 0
	}
	if o.critical {
		tpl.ExtraExtensions = append(tpl.ExtraExtensions, pkix.Extension{
			Id: oidPrivateCritical, Critical: true, Value: []byte{0x05, 0x00}, // ASN.1 NULL
		})
	}
	for _, f := range o.template {
		f(tpl)
	}
	return tpl, nil
}

// sign issues tpl under issuer (self-signed when issuer is nil) and parses
// the result.
func sign(tpl *x509.Certificate, issuer *CA, pub, signer crypto.Signer, o *options, pooled bool) (*x509.Certificate, error) {
	parent := tpl
	if issuer != nil {
		parent = issuer.Cert
	}
	if o.sha1 {
		switch signer.Public().(type) {
		case *rsa.PublicKey:
			tpl.SignatureAlgorithm = x509.SHA1WithRSA
		case *ecdsa.PublicKey:
			tpl.SignatureAlgorithm = x509.ECDSAWithSHA1
		default:
			return nil, errors.New("SHA-1 signatures need an RSA or ECDSA issuer key")
		}
	}
	if o.wrongKey {
		other, err := otherKey(signer, pooled)
		if err != nil {
			return nil, err
		}
		signer = other
		// CreateCertificate refuses a key that does not match the parent's
		// public key; hiding the parent's key keeps its name and key ID while
		// the signature comes from the unrelated key.
		p := *parent
		p.PublicKey = nil
		parent = &p
	}
	der, err := x509.CreateCertificate(rand.Reader, tpl, parent, pub.Public(), signer)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

// otherKey returns a key of the same kind as k but a different one.
func otherKey(k crypto.Signer, pooled bool) (crypto.Signer, error) {
	alg := ECDSAP256
	switch pub := k.Public().(type) {
	case *ecdsa.PublicKey:
		if pub.Curve == elliptic.P384() {
			alg = ECDSAP384
		}
	case ed25519.PublicKey:
		alg = Ed25519
	case *rsa.PublicKey:
		alg = rsaAlgorithm(pub.N.BitLen())
	}
	for range 8 {
		other, err := alg.generate(nil, pooled)
		if err != nil {
			return nil, err
		}
		if eq, ok := other.Public().(interface{ Equal(crypto.PublicKey) bool }); ok && !eq.Equal(k.Public()) {
			return other, nil
		}
	}
	return nil, errors.New("pkitest: could not find a key different from the issuer's")
}

func rsaAlgorithm(bits int) KeyAlgorithm {
	switch {
	case bits <= 1024:
		return RSA1024
	case bits <= 2048:
		return RSA2048
	}
	return RSA3072
}

// generate returns s when set, or a key of the algorithm.
func (a KeyAlgorithm) generate(s crypto.Signer, pooled bool) (crypto.Signer, error) {
	if s != nil {
		return s, nil
	}
	switch a {
	case ECDSAP256:
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case ECDSAP384:
		return ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case Ed25519:
		_, k, err := ed25519.GenerateKey(rand.Reader)
		return k, err
	case RSA1024, RSA2048, RSA3072:
		bits := map[KeyAlgorithm]int{RSA1024: 1024, RSA2048: 2048, RSA3072: 3072}[a]
		if pooled {
			return pooledRSAKey(bits)
		}
		return generateRSA(bits)
	}
	return nil, fmt.Errorf("pkitest: unknown key algorithm %d", int(a))
}

// generateRSA makes a fresh key. crypto/rsa still allows 1024 bits (the
// weak-key tests need it); it refuses less.
func generateRSA(bits int) (*rsa.PrivateKey, error) {
	return rsa.GenerateKey(rand.Reader, bits)
}

func randomSerial() (*big.Int, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return nil, err
	}
	b[0] &= 0x7f // positive, as RFC 5280 requires
	b[0] |= 0x01 // never zero
	return new(big.Int).SetBytes(b), nil
}

// uniqueName makes default CA names distinct across calls: chain building
// matches issuers by name, so two roots called "Root" in one test would be
// confusing to debug.
func uniqueName(prefix string) string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return prefix + " " + hex.EncodeToString(b)
}
