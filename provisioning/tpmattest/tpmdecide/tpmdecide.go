// Package tpmdecide takes the enrollment decision of TPM attestation and
// runs both legs of the challenge (DESIGN.md §5): which enrollment admits
// a device that presents an endorsement key (EK), the challenge the first
// register request gets, and the check of the SAS token that answers it.
//
// The decision, in order (the rules of X.509, with the EK in place of the
// client certificate):
//
//  1. The individual enrollment of the registration ID, if one exists,
//     decides alone: disabled refuses (whatever its attestation type: how
//     one device is taken out of a group); an enrollment of another
//     attestation type refuses; a TPM enrollment admits only the EK it
//     holds (compared in constant time), else 401010.
//  2. Otherwise a TPM enrollment group: the device sends its EK
//     certificate (tpm.endorsementKeyCertificate, and intermediates in
//     tpm.endorsementKeyCertificateChain). The certificate must certify
//     the presented EK, the registration ID must be the EK's default one
//     (base32 of SHA-256 of the EK TPM2B_PUBLIC: one TPM, one registration
//     ID, as the CN binds an X.509 device), and the chain must reach the
//     manufacturer CA of a TPM group: x509attest.Evaluator.DecideEKChain,
//     nearest group first, disabled refuses.
//  3. Nothing found refuses.
//
// It lives apart from tpmattest because it uses x509attest, which device
// code (clients/tpm imports tpmattest) must not link.
package tpmdecide

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/google/go-tpm/tpm2"

	"github.com/dpsbroker/dpsbroker/provisioning"
	"github.com/dpsbroker/dpsbroker/provisioning/tpmattest"
	"github.com/dpsbroker/dpsbroker/provisioning/wire"
	"github.com/dpsbroker/dpsbroker/provisioning/x509attest"
)

// Enrollments reads individual enrollments. provisioning.Store satisfies
// it.
type Enrollments interface {
	// GetEnrollment returns an error wrapping provisioning.ErrNotFound when
	// there is none.
	GetEnrollment(ctx context.Context, registrationID string) (*provisioning.IndividualEnrollment, error)
}

// GroupDecider finds the TPM group of an EK certificate chain.
// *x509attest.Evaluator satisfies it.
type GroupDecider interface {
	DecideEKChain(ctx context.Context, registrationID string, chain []*x509.Certificate) (*x509attest.Decision, error)
}

// Options configure an Attester.
type Options struct {
	// Challenges keeps pending challenges between the legs (required).
	// Share it between brokers (Redis) so that a device may answer on
	// another broker than the one that challenged it.
	Challenges provisioning.ChallengeStore
	// Groups decides TPM enrollment groups; nil admits individual
	// enrollments only.
	Groups GroupDecider
	// ChallengeTTL is how long a challenge may be answered
	// (tpmattest.DefaultChallengeTTL).
	ChallengeTTL time.Duration
	// Now is the clock (time.Now); Rand the randomness of challenges
	// (crypto/rand).
	Now  func() time.Time
	Rand io.Reader
}

// Attester decides TPM attestations. It is safe for concurrent use and
// keeps no state of its own: everything between the legs is in the
// ChallengeStore.
type Attester struct {
	enr    Enrollments
	groups GroupDecider
	ch     provisioning.ChallengeStore
	ttl    time.Duration
	now    func() time.Time
	rand   io.Reader
}

// New returns an Attester reading enrollments from enr.
func New(enr Enrollments, opts Options) (*Attester, error) {
	if enr == nil || opts.Challenges == nil {
		return nil, errors.New("tpmdecide: New needs Enrollments and Options.Challenges")
	}
	if opts.ChallengeTTL < 0 {
		return nil, fmt.Errorf("tpmdecide: negative ChallengeTTL %v", opts.ChallengeTTL)
	}
	a := &Attester{enr: enr, groups: opts.Groups, ch: opts.Challenges, ttl: opts.ChallengeTTL, now: opts.Now, rand: opts.Rand}
	if a.ttl == 0 {
		a.ttl = tpmattest.DefaultChallengeTTL
	}
	if a.now == nil {
		a.now = time.Now
	}
	return a, nil
}

// Reason says why a TPM device was refused. Values are stable strings for
// logs, metrics and events.
type Reason string

// Refusal reasons.
const (
	ReasonMalformed          Reason = "malformed"          // keys or EK certificate do not decode (400010, 400013)
	ReasonUnsupportedKey     Reason = "unsupportedKey"     // EK or SRK is not an acceptable key (400011)
	ReasonNoEnrollment       Reason = "noEnrollment"       // no individual enrollment, no TPM group (401002)
	ReasonIndividualDisabled Reason = "individualDisabled" // the individual enrollment is disabled (401002)
	ReasonGroupDisabled      Reason = "groupDisabled"      // the nearest TPM group is disabled (401002)
	ReasonNotTPM             Reason = "attestationMismatch"
	ReasonEKMismatch         Reason = "ekMismatch"             // not the enrolled EK, or not the certified one (401010)
	ReasonRegistrationID     Reason = "registrationIdMismatch" // group device not using its EK's registration ID (401002)
	ReasonBadEKCertificate   Reason = "badEKCertificate"       // the EK certificate chain fails (401002)
	ReasonNoChallenge        Reason = "noChallenge"            // nothing pending: never issued, replayed or expired (401011)
	ReasonChallengeMismatch  Reason = "challengeMismatch"      // issued for another SRK or registration ID (401012)
	ReasonBadSAS             Reason = "badSAS"                 // the answer does not verify (401000)
)

// Decision is the outcome of one leg.
type Decision struct {
	// Admitted is true when the device may go on: a challenge was issued
	// (first leg) or the answer verified (second leg).
	Admitted       bool
	RegistrationID string
	// DeviceID is the individual enrollment's deviceId, or the
	// registration ID.
	DeviceID string
	// EK and SRK are the checked keys (nil when they did not parse).
	EK, SRK *tpmattest.Key
	// Enrollment or Group is the entry that decided, when one did.
	Enrollment *provisioning.IndividualEnrollment
	Group      *provisioning.EnrollmentGroup
	// EKCertificate and SigningCertificate describe the EK certificate and
	// the group's CA when a group decided.
	EKCertificate, SigningCertificate *wire.X509CertificateInfo
	// AuthenticationKey is the blob for the device: the challenge of the
	// 401 (first leg), or the key for registrationState.tpm (second leg).
	AuthenticationKey string
	Reason            Reason
	// ErrorCode is the DPS error code of a refusal.
	ErrorCode int
	// Explanation is one line for logs and events; it never holds key
	// material.
	Explanation string
}

func (d *Decision) refuse(r Reason, code int, explanation string) *Decision {
	d.Admitted, d.Reason, d.ErrorCode, d.Explanation = false, r, code, explanation
	return d
}

// refuseErr refuses with the code of a *tpmattest.Error.
func (d *Decision) refuseErr(r Reason, err error) *Decision {
	code := tpmattest.ErrorCode(err)
	if code == 0 {
		code = wire.ErrorCodeUnauthorized
	}
	return d.refuse(r, code, err.Error())
}

// Challenge takes the first leg: it checks the EK, decides the enrollment,
// checks the SRK and issues a challenge bound to the registration ID, EK
// and SRK, kept in the ChallengeStore for the TTL. On admission
// AuthenticationKey is the blob for the 401 body. The error is non-nil only
// when the store failed (the caller answers 503).
func (a *Attester) Challenge(ctx context.Context, registrationID string, t *wire.TPMAttestation) (*Decision, error) {
	d, err := a.decide(ctx, registrationID, t)
	if err != nil || !d.Admitted {
		return d, err
	}
	if d.SRK, err = tpmattest.ParseSRKBase64(t.StorageRootKey); err != nil {
		return d.refuseErr(keyReason(err), err), nil
	}
	ch, err := tpmattest.NewKeyChallenge(a.rand, d.EK, d.SRK)
	if err != nil {
		return nil, fmt.Errorf("tpmdecide: challenge: %w", err)
	}
	p := ch.Pending(registrationID, a.now(), a.ttl)
	if err := a.ch.PutChallenge(ctx, tpmattest.ChallengeKey(registrationID, d.EK.Digest), p.Marshal(), a.ttl); err != nil {
		return nil, fmt.Errorf("tpmdecide: keep challenge: %w", err)
	}
	d.AuthenticationKey = ch.AuthenticationKey
	d.Explanation += "; challenge issued"
	return d, nil
}

// Answer takes the second leg: the same keys and the SAS token signed
// with the imported key. The pending challenge is taken (deleted) before
// anything is verified, so every answer, right or wrong, consumes it. Then
// the challenge's binding and the SAS are checked, and the enrollment is
// decided again (an entry disabled between the legs refuses). On admission
// AuthenticationKey is a fresh blob for the same EK and SRK, for
// registrationState.tpm.authenticationKey.
func (a *Attester) Answer(ctx context.Context, idScope, registrationID string, t *wire.TPMAttestation, sasToken string) (*Decision, error) {
	d := &Decision{RegistrationID: registrationID, DeviceID: registrationID}
	var err error
	if d.EK, err = tpmattest.ParseEKBase64(t.EndorsementKey); err != nil {
		return d.refuseErr(keyReason(err), err), nil
	}
	if d.SRK, err = tpmattest.ParseSRKBase64(t.StorageRootKey); err != nil {
		return d.refuseErr(keyReason(err), err), nil
	}
	b, err := a.ch.TakeChallenge(ctx, tpmattest.ChallengeKey(registrationID, d.EK.Digest))
	switch {
	case errors.Is(err, provisioning.ErrNotFound):
		return d.refuse(ReasonNoChallenge, tpmattest.CodeNoChallenge,
			"no TPM challenge is pending for this registration ID and EK (never issued, already answered, or expired)"), nil
	case err != nil:
		return nil, fmt.Errorf("tpmdecide: take challenge: %w", err)
	}
	p, err := tpmattest.UnmarshalPendingChallenge(b)
	if err != nil {
		return d.refuseErr(ReasonMalformed, err), nil
	}
	now := a.now()
	if err := p.Check(registrationID, d.EK, d.SRK, now); err != nil {
		r := ReasonChallengeMismatch
		if tpmattest.ErrorCode(err) == tpmattest.CodeNoChallenge {
			r = ReasonNoChallenge
		}
		return d.refuseErr(r, err), nil
	}
	if err := p.VerifySAS(sasToken, idScope, now); err != nil {
		return d.refuseErr(ReasonBadSAS, err), nil
	}
	ek, srk := d.EK, d.SRK
	if d, err = a.decide(ctx, registrationID, t); err != nil || !d.Admitted {
		return d, err
	}
	d.SRK = srk
	ch, err := tpmattest.NewKeyChallenge(a.rand, ek, srk)
	if err != nil {
		return nil, fmt.Errorf("tpmdecide: authentication key: %w", err)
	}
	d.AuthenticationKey = ch.AuthenticationKey
	d.Explanation += "; challenge answered"
	return d, nil
}

// decide parses the EK and finds the entry that admits it.
func (a *Attester) decide(ctx context.Context, registrationID string, t *wire.TPMAttestation) (*Decision, error) {
	d := &Decision{RegistrationID: registrationID, DeviceID: registrationID}
	if t == nil {
		return d.refuse(ReasonMalformed, tpmattest.CodeMalformedKey, "no tpm object in the register request"), nil
	}
	var err error
	if d.EK, err = tpmattest.ParseEKBase64(t.EndorsementKey); err != nil {
		return d.refuseErr(keyReason(err), err), nil
	}
	enr, err := a.enr.GetEnrollment(ctx, registrationID)
	switch {
	case err == nil && enr != nil:
		return decideIndividual(d, enr), nil
	case err != nil && !errors.Is(err, provisioning.ErrNotFound):
		return nil, fmt.Errorf("tpmdecide: read individual enrollment %q: %w", registrationID, err)
	}
	if t.EndorsementKeyCertificate == "" || a.groups == nil {
		return d.refuse(ReasonNoEnrollment, x509attest.ErrorCodeUnauthorized,
			fmt.Sprintf("no individual enrollment %q, and no EK certificate to find a TPM enrollment group", registrationID)), nil
	}
	return a.decideGroup(ctx, d, t)
}

func decideIndividual(d *Decision, enr *provisioning.IndividualEnrollment) *Decision {
	d.Enrollment = enr
	if enr.DeviceID != "" {
		d.DeviceID = enr.DeviceID
	}
	id := enr.RegistrationID
	switch {
	case !enr.Enabled():
		return d.refuse(ReasonIndividualDisabled, x509attest.ErrorCodeUnauthorized,
			fmt.Sprintf("individual enrollment %q (%s attestation) is disabled", id, enr.Attestation.Type))
	case enr.Attestation.Type != provisioning.AttestationTPM || enr.Attestation.TPM == nil:
		return d.refuse(ReasonNotTPM, x509attest.ErrorCodeUnauthorized,
			fmt.Sprintf("individual enrollment %q uses %s attestation, not tpm; it decides alone", id, enr.Attestation.Type))
	case !d.EK.Matches(enr.Attestation.TPM.EndorsementKey):
		return d.refuse(ReasonEKMismatch, tpmattest.CodeEKMismatch,
			fmt.Sprintf("the endorsement key presented is not the one of individual enrollment %q", id))
	}
	d.Admitted = true
	d.Explanation = fmt.Sprintf("individual enrollment %q is enabled and holds this endorsement key", id)
	return d
}

func (a *Attester) decideGroup(ctx context.Context, d *Decision, t *wire.TPMAttestation) (*Decision, error) {
	chain := make([]*x509.Certificate, 0, 1+len(t.EndorsementKeyCertificateChain))
	for i, s := range append([]string{t.EndorsementKeyCertificate}, t.EndorsementKeyCertificateChain...) {
		c, err := parseCertificate(s)
		if err != nil {
			field := "tpm.endorsementKeyCertificate"
			if i > 0 {
				field += fmt.Sprintf("Chain[%d]", i-1)
			}
			return d.refuse(ReasonMalformed, tpmattest.CodeMalformedEKCertificate, field+": "+err.Error()), nil
		}
		chain = append(chain, c)
	}
	if !certifies(chain[0], d.EK) {
		return d.refuse(ReasonEKMismatch, tpmattest.CodeEKMismatch, "the EK certificate does not certify the endorsement key presented"), nil
	}
	if want := d.EK.RegistrationID(); !strings.EqualFold(d.RegistrationID, want) {
		return d.refuse(ReasonRegistrationID, x509attest.ErrorCodeUnauthorized,
			fmt.Sprintf("a device admitted by a TPM enrollment group must use the registration ID of its EK, %q", want)), nil
	}
	gd, err := a.groups.DecideEKChain(ctx, d.RegistrationID, chain)
	if err != nil {
		return nil, err
	}
	d.Group, d.EKCertificate, d.SigningCertificate = gd.Group, gd.Certificate, gd.SigningCertificate
	d.Explanation = gd.Explanation
	if gd.Outcome != x509attest.Provision {
		r := ReasonBadEKCertificate
		switch gd.Reason {
		case x509attest.ReasonNoEnrollment:
			r = ReasonNoEnrollment
		case x509attest.ReasonGroupDisabled:
			r = ReasonGroupDisabled
		}
		return d.refuse(r, x509attest.ErrorCodeUnauthorized, gd.Explanation), nil
	}
	d.Admitted = true
	return d, nil
}

// parseCertificate reads base64 DER. Devices reading the certificate from
// NV strip the padding some TPMs leave after it (clients/tpm does).
func parseCertificate(s string) (*x509.Certificate, error) {
	der, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, errors.New("not base64")
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, errors.New("not a DER X.509 certificate")
	}
	return c, nil
}

// certifies reports whether c's public key is the EK's.
func certifies(c *x509.Certificate, ek *tpmattest.Key) bool {
	pub, err := tpm2.Pub(*ek.Public)
	if err != nil {
		return false
	}
	eq, ok := c.PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	return ok && eq.Equal(pub)
}

func keyReason(err error) Reason {
	if tpmattest.ErrorCode(err) == tpmattest.CodeUnsupportedKey {
		return ReasonUnsupportedKey
	}
	return ReasonMalformed
}
