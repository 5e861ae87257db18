package x509attest

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"fmt"
	"slices"
	"time"

	"github.com/dpsbroker/dpsbroker/provisioning"
)

// purpose says what the leaf of a walked chain is for, and so which
// extended key usage a CA above it must allow.
type purpose uint8

const (
	// purposeClientAuth: a device's TLS client certificate (Decide).
	purposeClientAuth purpose = iota
	// purposeEK: a TPM endorsement key certificate (DecideEKChain).
	purposeEK
)

// OIDs of the TCG EK Credential Profile.
var (
	oidSubjectAltName = asn1.ObjectIdentifier{2, 5, 29, 17}
	// oidEKCertificate is tcg-kp-EKCertificate, the extended key usage of
	// EK certificates and of the CAs that issue only them.
	oidEKCertificate = asn1.ObjectIdentifier{2, 23, 133, 8, 1}
)

// DecideEKChain finds the TPM enrollment group that admits a device by its
// endorsement key (EK) certificate. chain is the EK certificate first, then
// the intermediates the device sent, in any order; registrationID is the
// device's (it only names the device in explanations: the caller binds the
// registration ID to the EK).
//
// It is Decide's group walk for a certificate that is not a TLS client
// certificate, and only TPM groups (attestation type tpm, whose x509
// signingCertificates or caReferences name the manufacturer CA) are
// looked at, so an EK certificate never admits an X.509 device and an
// X.509 group never admits a TPM. The differences from Decide, all due to
// what EK certificates are:
//   - The EK certificate needs no digitalSignature or clientAuth (an RSA EK
//     is a decryption key), its subject is usually empty, and its critical
//     subjectAltName holding the TPM's directoryName is accepted. It must
//     still be within its validity, an end entity with an RSA (>= 2048
//     bits) or ECDSA P-256/P-384 key, signed with SHA-256 or better, and
//     carry no other unknown critical extension.
//   - A CA above it that restricts extended key usage must allow any usage
//     or tcg-kp-EKCertificate (2.23.133.8.1), instead of clientAuth.
//
// Individual enrollments are not read: the TPM attestation decides those
// by EK before calling this. The Decision's Certificate describes the EK
// certificate; Group and SigningCertificate the group that decided. The
// error is non-nil only when the enrollments could not be read.
func (e *Evaluator) DecideEKChain(ctx context.Context, registrationID string, chain []*x509.Certificate) (*Decision, error) {
	d := &Decision{RegistrationID: registrationID, DeviceID: registrationID}
	if len(chain) == 0 || chain[0] == nil {
		return d.refuse(ReasonMalformed, "no EK certificate was presented"), nil
	}
	if len(chain) > e.maxChain {
		return d.refuse(ReasonChainTooLong, fmt.Sprintf("%d certificates presented, the limit is %d", len(chain), e.maxChain)), nil
	}
	for i, c := range chain {
		if c == nil {
			return d.refuse(ReasonMalformed, fmt.Sprintf("certificate %d of the EK chain is missing", i)), nil
		}
		if len(c.Raw) > e.maxSize {
			return d.refuse(ReasonCertificateTooLarge, fmt.Sprintf("certificate %d (%s) is %d bytes, the limit is %d", i, c.Subject, len(c.Raw), e.maxSize)), nil
		}
	}
	leaf := ekView(chain[0])
	leafHash := sha256.Sum256(leaf.Raw)
	d.Certificate = e.leafInfo(leaf, leafHash)
	now := e.now()
	if r, why := e.checkEKLeaf(leaf, now); r != "" {
		return d.refuse(r, why), nil
	}
	if selfIssued(leaf) {
		return d.refuse(ReasonSelfSignedLeaf, fmt.Sprintf("EK certificate %s is self-signed", d.Certificate.SHA256Thumbprint)), nil
	}
	groups, err := e.src.ListEnrollmentGroups(ctx)
	if err != nil {
		return nil, fmt.Errorf("x509attest: list enrollment groups: %w", err)
	}
	ix := e.index(groups, provisioning.AttestationTPM, &e.tpmGroups)
	extra, err := e.resolveCARefs(ctx, ix)
	if err != nil {
		return nil, err
	}
	walked := append([]*x509.Certificate{leaf}, chain[1:]...)
	return e.walk(d, walked, leafHash, ix, extra, now, purposeEK), nil
}

// ekView returns c, or a shallow copy without the critical subjectAltName
// in UnhandledCriticalExtensions: EK certificates carry the TPM's
// manufacturer, model and version there as a directoryName, which
// crypto/x509 does not parse (and the standard verifier, used for name
// constraints, would refuse). The caller's certificate is not modified.
func ekView(c *x509.Certificate) *x509.Certificate {
	i := slices.IndexFunc(c.UnhandledCriticalExtensions, func(o asn1.ObjectIdentifier) bool { return o.Equal(oidSubjectAltName) })
	if i < 0 {
		return c
	}
	cp := *c
	cp.UnhandledCriticalExtensions = slices.Delete(slices.Clone(c.UnhandledCriticalExtensions), i, i+1)
	return &cp
}

// checkEKLeaf applies the EK certificate rules that need no enrollment.
func (e *Evaluator) checkEKLeaf(leaf *x509.Certificate, now time.Time) (Reason, string) {
	if r, why := e.checkValidity(leaf, "EK certificate", now); r != "" {
		return r, why
	}
	if len(leaf.UnhandledCriticalExtensions) > 0 {
		return ReasonCriticalExtension, fmt.Sprintf("EK certificate %q has an unknown critical extension %v", leaf.Subject, leaf.UnhandledCriticalExtensions[0])
	}
	if leaf.BasicConstraintsValid && leaf.IsCA {
		return ReasonLeafIsCA, fmt.Sprintf("EK certificate %q is a CA (CA:TRUE)", leaf.Subject)
	}
	if p := keyProblem(leaf.PublicKey); p != "" {
		return ReasonWeakKey, fmt.Sprintf("EK certificate %q: %s", leaf.Subject, p)
	}
	if !secureSignature(leaf.SignatureAlgorithm) {
		return ReasonInsecureSignature, fmt.Sprintf("EK certificate %q is signed with %v; SHA-256 or better is required", leaf.Subject, leaf.SignatureAlgorithm)
	}
	return "", ""
}

// allowsEK: no extended key usage means any usage.
func allowsEK(c *x509.Certificate) bool {
	if len(c.ExtKeyUsage) == 0 && len(c.UnknownExtKeyUsage) == 0 {
		return true
	}
	if slices.Contains(c.ExtKeyUsage, x509.ExtKeyUsageAny) {
		return true
	}
	return slices.ContainsFunc(c.UnknownExtKeyUsage, func(o asn1.ObjectIdentifier) bool { return o.Equal(oidEKCertificate) })
}
