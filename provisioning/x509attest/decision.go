package x509attest

import (
	"github.com/dpsbroker/dpsbroker/provisioning"
	"github.com/dpsbroker/dpsbroker/provisioning/wire"
)

// Outcome is what the decision does with the device. The zero value is
// Refuse, so a Decision that was never filled in admits nobody.
type Outcome int

// Outcomes.
const (
	Refuse Outcome = iota
	Provision
)

// String returns "provision" or "refuse".
func (o Outcome) String() string {
	if o == Provision {
		return "provision"
	}
	return "refuse"
}

// Reason says why a device was refused. Values are stable strings, fit for
// logs, metrics labels and events.
type Reason string

// Refusal reasons. Enrollment reasons come first, then certificate defects.
const (
	// ReasonNoEnrollment: no individual enrollment for the registration ID
	// and no group references any certificate of the verified chain.
	ReasonNoEnrollment Reason = "noEnrollment"
	// ReasonIndividualDisabled: the device's individual enrollment (of any
	// attestation type) is disabled; it decides alone, even over a group.
	ReasonIndividualDisabled Reason = "individualDisabled"
	// ReasonGroupDisabled: the first group found walking up the chain is
	// disabled.
	ReasonGroupDisabled Reason = "groupDisabled"
	// ReasonCertificateMismatch: an enabled individual enrollment exists for
	// the registration ID but does not hold the presented certificate (or is
	// not an X.509 enrollment). It decides alone, so groups are not tried.
	ReasonCertificateMismatch Reason = "certificateMismatch"

	// ReasonExpired: a certificate of the chain is past its NotAfter.
	ReasonExpired Reason = "expired"
	// ReasonNotYetValid: a certificate of the chain is before its NotBefore.
	ReasonNotYetValid Reason = "notYetValid"
	// ReasonLeafIsCA: the device certificate says CA:TRUE.
	ReasonLeafIsCA Reason = "leafIsCA"
	// ReasonIssuerNotCA: a certificate that signed another one is not a CA.
	ReasonIssuerNotCA Reason = "issuerNotCA"
	// ReasonMissingClientAuth: an extended key usage list (leaf or CA)
	// leaves out clientAuth.
	ReasonMissingClientAuth Reason = "missingClientAuth"
	// ReasonKeyUsage: the leaf may not make digital signatures, or a CA may
	// not sign certificates.
	ReasonKeyUsage Reason = "keyUsage"
	// ReasonWeakKey: RSA under 2048 bits, or a key type or curve that is
	// not RSA, ECDSA P-256/P-384 or Ed25519.
	ReasonWeakKey Reason = "weakKey"
	// ReasonInsecureSignature: a signature uses SHA-1, MD5 or an unknown
	// algorithm.
	ReasonInsecureSignature Reason = "insecureSignature"
	// ReasonBadSignature: a certificate names an issuer whose key did not
	// sign it.
	ReasonBadSignature Reason = "badSignature"
	// ReasonPathLength: a CA's path length constraint is exceeded.
	ReasonPathLength Reason = "pathLength"
	// ReasonNameConstraints: a CA's name constraints forbid a name below it.
	ReasonNameConstraints Reason = "nameConstraints"
	// ReasonSelfSignedLeaf: a self-signed device certificate without an
	// individual enrollment holding it.
	ReasonSelfSignedLeaf Reason = "selfSignedLeaf"
	// ReasonChainTooLong: more certificates than Options.MaxChainLength.
	ReasonChainTooLong Reason = "chainTooLong"
	// ReasonCertificateTooLarge: a certificate over
	// Options.MaxCertificateSize bytes of DER.
	ReasonCertificateTooLarge Reason = "certificateTooLarge"
	// ReasonBadRegistrationID: the leaf subject CN is not a valid X.509
	// registration ID.
	ReasonBadRegistrationID Reason = "badRegistrationId"
	// ReasonCriticalExtension: a certificate carries a critical extension
	// this verifier does not understand.
	ReasonCriticalExtension Reason = "unhandledCriticalExtension"
	// ReasonMalformed: no certificate, or an unusable one.
	ReasonMalformed Reason = "malformed"
)

// ErrorCodeUnauthorized is the DPS error code of every X.509 refusal
// ("Invalid certificate" / "Unauthorized", HTTP 401). The Reason tells the
// cases apart for operators; devices get the code DPS would send.
const ErrorCodeUnauthorized = 401002

// Decision is the outcome of one X.509 attestation with everything needed to
// register the device, log the decision and explain it.
type Decision struct {
	Outcome Outcome
	// RegistrationID is the leaf subject CN.
	RegistrationID string
	// DeviceID is the individual enrollment's deviceId, or the CN.
	DeviceID string
	// Enrollment is set when an individual enrollment decided.
	Enrollment *provisioning.IndividualEnrollment
	// Group is set when an enrollment group decided.
	Group *provisioning.EnrollmentGroup
	// Certificate describes the leaf.
	Certificate *wire.X509CertificateInfo
	// SigningCertificate describes the group certificate that decided (nil
	// when an individual enrollment decided or nothing matched).
	SigningCertificate *wire.X509CertificateInfo
	// Reason is why the device was refused (empty on Provision).
	Reason Reason
	// ErrorCode is the DPS error code of a refusal (0 on Provision).
	ErrorCode int
	// Explanation is one line for humans: which entry, which certificate,
	// why. It names certificates, never key material.
	Explanation string
}

// Err returns nil when the device is provisioned and a *RefusalError
// otherwise.
func (d *Decision) Err() error {
	if d.Outcome == Provision {
		return nil
	}
	code := d.ErrorCode
	if code == 0 {
		code = ErrorCodeUnauthorized
	}
	reason := d.Reason
	if reason == "" {
		reason = ReasonMalformed
	}
	return &RefusalError{Reason: reason, Code: code, Explanation: d.Explanation}
}

// RefusalError is a refused attestation as an error; find it with
// errors.As.
type RefusalError struct {
	Reason      Reason
	Code        int
	Explanation string
}

func (e *RefusalError) Error() string {
	return "x509 attestation refused (" + string(e.Reason) + "): " + e.Explanation
}

func (d *Decision) provision(explanation string) *Decision {
	d.Outcome = Provision
	d.Reason = ""
	d.ErrorCode = 0
	d.Explanation = explanation
	return d
}

func (d *Decision) refuse(r Reason, explanation string) *Decision {
	d.Outcome = Refuse
	d.Reason = r
	d.ErrorCode = ErrorCodeUnauthorized
	d.Explanation = explanation
	return d
}
