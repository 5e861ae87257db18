package x509attest

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"fmt"
	"time"

	"github.com/dpsbroker/dpsbroker/provisioning"
)

// RSA key size bounds. The upper bound keeps verification work bounded: an
// attacker-chosen 16k-bit key costs far more than any real device key.
const (
	minRSABits = 2048
	maxRSABits = 8192
)

// checkLeaf applies the device-certificate rules that need no enrollment:
// validity, end entity, usages, key, signature algorithm, registration ID.
func (e *Evaluator) checkLeaf(leaf *x509.Certificate, now time.Time) (Reason, string) {
	if r, why := e.checkValidity(leaf, "device certificate", now); r != "" {
		return r, why
	}
	if len(leaf.UnhandledCriticalExtensions) > 0 {
		return ReasonCriticalExtension, fmt.Sprintf("device certificate %q has an unknown critical extension %v", leaf.Subject, leaf.UnhandledCriticalExtensions[0])
	}
	if leaf.BasicConstraintsValid && leaf.IsCA {
		return ReasonLeafIsCA, fmt.Sprintf("device certificate %q is a CA (CA:TRUE); devices must present an end-entity certificate", leaf.Subject)
	}
	if leaf.KeyUsage != 0 && leaf.KeyUsage&x509.KeyUsageDigitalSignature == 0 {
		return ReasonKeyUsage, fmt.Sprintf("device certificate %q has a key usage without digitalSignature", leaf.Subject)
	}
	if !allowsClientAuth(leaf) {
		return ReasonMissingClientAuth, fmt.Sprintf("device certificate %q has an extended key usage without clientAuth", leaf.Subject)
	}
	if p := keyProblem(leaf.PublicKey); p != "" {
		return ReasonWeakKey, fmt.Sprintf("device certificate %q: %s", leaf.Subject, p)
	}
	if !secureSignature(leaf.SignatureAlgorithm) {
		return ReasonInsecureSignature, fmt.Sprintf("device certificate %q is signed with %v; SHA-256 or better is required", leaf.Subject, leaf.SignatureAlgorithm)
	}
	if err := provisioning.ValidateRegistrationID(leaf.Subject.CommonName, provisioning.MaxX509RegistrationIDLen); err != nil {
		return ReasonBadRegistrationID, fmt.Sprintf("device certificate subject CN %q: %v", leaf.Subject.CommonName, err)
	}
	return "", ""
}

// checkLink decides whether parent may be the issuer of child, at position
// depth of the chain (the leaf is 0, its issuer 1). The constraint checks
// are repeated on every decision (they are cheap and depend on the clock
// and the position); only the signature verification is cached.
func (e *Evaluator) checkLink(child *x509.Certificate, childHash [32]byte, parent *x509.Certificate, parentHash [32]byte, depth int, now time.Time, budget *int, p purpose) (Reason, string) {
	if r, why := e.checkValidity(parent, "CA certificate", now); r != "" {
		return r, why
	}
	if !parent.BasicConstraintsValid || !parent.IsCA {
		return ReasonIssuerNotCA, fmt.Sprintf("certificate %q names %q as its issuer, which is not a CA (no CA:TRUE)", child.Subject, parent.Subject)
	}
	if len(parent.UnhandledCriticalExtensions) > 0 {
		return ReasonCriticalExtension, fmt.Sprintf("CA certificate %q has an unknown critical extension %v", parent.Subject, parent.UnhandledCriticalExtensions[0])
	}
	if parent.KeyUsage != 0 && parent.KeyUsage&x509.KeyUsageCertSign == 0 {
		return ReasonKeyUsage, fmt.Sprintf("CA certificate %q has a key usage without keyCertSign", parent.Subject)
	}
	// Certificates between the leaf and parent: depth-1. Counting them
	// from the parent's position (not by treating an intermediate as a
	// leaf) is what makes pathlen 0 mean "may issue leaves only".
	if parent.MaxPathLen >= 0 && depth-1 > parent.MaxPathLen {
		return ReasonPathLength, fmt.Sprintf("CA certificate %q allows %d intermediate CA(s) below it, the chain has %d", parent.Subject, parent.MaxPathLen, depth-1)
	}
	if p == purposeEK {
		if !allowsEK(parent) {
			return ReasonKeyUsage, fmt.Sprintf("CA certificate %q restricts extended key usage and leaves out tcg-kp-EKCertificate", parent.Subject)
		}
	} else if !allowsClientAuth(parent) {
		return ReasonMissingClientAuth, fmt.Sprintf("CA certificate %q restricts extended key usage and leaves out clientAuth", parent.Subject)
	}
	if p := keyProblem(parent.PublicKey); p != "" {
		return ReasonWeakKey, fmt.Sprintf("CA certificate %q: %s", parent.Subject, p)
	}
	if !secureSignature(child.SignatureAlgorithm) {
		return ReasonInsecureSignature, fmt.Sprintf("certificate %q is signed with %v; SHA-256 or better is required", child.Subject, child.SignatureAlgorithm)
	}
	k := pairKey{child: childHash, parent: parentHash}
	if e.links.has(k) {
		return "", ""
	}
	if *budget <= 0 {
		return ReasonChainTooLong, fmt.Sprintf("gave up on %q: too many candidate issuers to check", child.Subject)
	}
	*budget--
	if err := child.CheckSignatureFrom(parent); err != nil {
		return ReasonBadSignature, fmt.Sprintf("certificate %q is not signed by the key of %q: %v", child.Subject, parent.Subject, err)
	}
	e.links.add(k)
	return "", ""
}

func (e *Evaluator) checkValidity(c *x509.Certificate, what string, now time.Time) (Reason, string) {
	if now.Add(e.skew).Before(c.NotBefore) {
		return ReasonNotYetValid, fmt.Sprintf("%s %q is not valid before %s", what, c.Subject, c.NotBefore.UTC().Format(time.RFC3339))
	}
	if now.Add(-e.skew).After(c.NotAfter) {
		return ReasonExpired, fmt.Sprintf("%s %q expired at %s", what, c.Subject, c.NotAfter.UTC().Format(time.RFC3339))
	}
	return "", ""
}

// allowsClientAuth: no extended key usage means any usage.
func allowsClientAuth(c *x509.Certificate) bool {
	if len(c.ExtKeyUsage) == 0 && len(c.UnknownExtKeyUsage) == 0 {
		return true
	}
	for _, u := range c.ExtKeyUsage {
		if u == x509.ExtKeyUsageClientAuth || u == x509.ExtKeyUsageAny {
			return true
		}
	}
	return false
}

// keyProblem describes what is wrong with a public key, or returns "".
func keyProblem(pub any) string {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		switch n := k.N.BitLen(); {
		case n < minRSABits:
			return fmt.Sprintf("RSA key of %d bits, at least %d are required", n, minRSABits)
		case n > maxRSABits:
			return fmt.Sprintf("RSA key of %d bits, at most %d are accepted", n, maxRSABits)
		}
		return ""
	case *ecdsa.PublicKey:
		if k.Curve == elliptic.P256() || k.Curve == elliptic.P384() {
			return ""
		}
		return fmt.Sprintf("ECDSA curve %s is not supported (P-256 or P-384)", k.Curve.Params().Name)
	case ed25519.PublicKey:
		return ""
	}
	return fmt.Sprintf("key type %T is not supported (RSA, ECDSA P-256/P-384, Ed25519)", pub)
}

// secureSignature is an allow-list: SHA-1, MD5 and anything unknown fail.
func secureSignature(a x509.SignatureAlgorithm) bool {
	switch a {
	case x509.SHA256WithRSA, x509.SHA384WithRSA, x509.SHA512WithRSA,
		x509.SHA256WithRSAPSS, x509.SHA384WithRSAPSS, x509.SHA512WithRSAPSS,
		x509.ECDSAWithSHA256, x509.ECDSAWithSHA384, x509.ECDSAWithSHA512,
		x509.PureEd25519:
		return true
	}
	return false
}

// selfIssued reports whether subject and issuer are the same name: a root,
// or a self-signed device certificate.
func selfIssued(c *x509.Certificate) bool {
	return bytes.Equal(c.RawSubject, c.RawIssuer)
}

// keyIDsAgree rules out a candidate issuer cheaply when both key
// identifiers are present and differ (a renewed CA under the same name).
func keyIDsAgree(child, parent *x509.Certificate) bool {
	return len(child.AuthorityKeyId) == 0 || len(parent.SubjectKeyId) == 0 ||
		bytes.Equal(child.AuthorityKeyId, parent.SubjectKeyId)
}

func hasNameConstraints(c *x509.Certificate) bool {
	return c.PermittedDNSDomainsCritical ||
		len(c.PermittedDNSDomains) > 0 || len(c.ExcludedDNSDomains) > 0 ||
		len(c.PermittedIPRanges) > 0 || len(c.ExcludedIPRanges) > 0 ||
		len(c.PermittedEmailAddresses) > 0 || len(c.ExcludedEmailAddresses) > 0 ||
		len(c.PermittedURIDomains) > 0 || len(c.ExcludedURIDomains) > 0
}
