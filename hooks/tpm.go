package hooks

import (
	"github.com/dpsbroker/dpsbroker/provisioning"
	"github.com/dpsbroker/dpsbroker/provisioning/tpmattest/tpmdecide"
	"github.com/dpsbroker/dpsbroker/provisioning/wire"
)

// registerTPM handles a register request with a tpm object in a session
// without a client certificate. Without a SAS token it is the first leg:
// the enrollment is decided and the device gets 401 with the challenge.
// With one (tpm.sasToken, or else once the CONNECT password) it is the
// second leg: the pending challenge is consumed and the answer verified,
// then the device is registered as any other (202 and polls, or 200 at
// once on the fast path).
func (h *DPS) registerTPM(s *session, req wire.Request, rr *wire.RegisterRequest) response {
	token := rr.TPM.SASToken
	t := s.tpmState()
	if token == "" && t.connectSAS != "" && !t.connectSASUsed {
		// The CONNECT password answers one challenge; after that the
		// session can start over with a first leg.
		token, t.connectSASUsed = t.connectSAS, true
	}
	ctx, cancel := h.requestContext()
	defer cancel()
	if token == "" {
		d, err := h.opts.TPM.Challenge(ctx, s.registrationID, rr.TPM)
		if err != nil {
			return h.unavailable(ctx, err, s, &req)
		}
		if !d.Admitted {
			return h.refuseTPM(s, &req, d)
		}
		h.log.Info("TPM challenge issued", "registrationId", s.registrationID, "explanation", d.Explanation)
		r := h.jsonResponse(401, 0, &wire.TPMChallenge{AuthenticationKey: d.AuthenticationKey, KeyName: wire.TPMKeyName})
		r.rid = req.RID
		return r
	}
	d, err := h.opts.TPM.Answer(ctx, h.opts.IDScope, s.registrationID, rr.TPM, token)
	if err != nil {
		return h.unavailable(ctx, err, s, &req)
	}
	if !d.Admitted {
		return h.refuseTPM(s, &req, d)
	}
	op, err := h.opts.Registrar.Register(ctx, &provisioning.Admission{
		RegistrationID:         s.registrationID,
		DeviceID:               d.DeviceID,
		AttestationType:        provisioning.AttestationTPM,
		Enrollment:             d.Enrollment,
		Group:                  d.Group,
		SigningCertificateInfo: d.SigningCertificate,
		AuthenticationKey:      d.AuthenticationKey,
		Explanation:            d.Explanation,
	}, rr.Payload)
	if err != nil {
		return h.unavailable(ctx, err, s, &req)
	}
	t.operation, t.key = op.OperationID, d.AuthenticationKey
	return h.registered(s, op)
}

// refuseTPM records the refusal event and answers with its code. Unlike
// anonymous CONNECT refusals, TPM refusals are recorded: the device named
// a registration ID and sent keys, and the register rate limit bounds
// what one connection can write.
func (h *DPS) refuseTPM(s *session, req *wire.Request, d *tpmdecide.Decision) response {
	ev := &provisioning.Event{
		Type:            provisioning.EventRefused,
		RegistrationID:  s.registrationID,
		DeviceID:        d.DeviceID,
		AttestationType: provisioning.AttestationTPM,
		ErrorCode:       d.ErrorCode,
		Reason:          string(d.Reason),
		Explanation:     d.Explanation,
	}
	if d.Group != nil {
		ev.EnrollmentGroupID = d.Group.EnrollmentGroupID
	}
	ctx, cancel := h.requestContext()
	h.opts.Registrar.Refused(ctx, ev)
	cancel()
	code := d.ErrorCode
	if code == 0 {
		code = wire.ErrorCodeUnauthorized
	}
	return h.errorResponse(code, tpmMessage(d), s, req)
}

// tpmMessage is what the device reads: the reason, not the enrollment
// structure (which stays in logs and events).
func tpmMessage(d *tpmdecide.Decision) string {
	switch d.Reason {
	case tpmdecide.ReasonMalformed, tpmdecide.ReasonUnsupportedKey:
		return d.Explanation // about the device's own keys or certificate
	case tpmdecide.ReasonNoEnrollment:
		return "no enrollment for this TPM"
	case tpmdecide.ReasonIndividualDisabled:
		return "enrollment disabled"
	case tpmdecide.ReasonGroupDisabled:
		return "enrollment group disabled"
	case tpmdecide.ReasonNotTPM:
		return "the enrollment of this registration ID does not use TPM attestation"
	case tpmdecide.ReasonEKMismatch:
		return "endorsement key does not match the enrollment"
	case tpmdecide.ReasonRegistrationID:
		return "a TPM admitted by an enrollment group must use its endorsement key's registration ID"
	case tpmdecide.ReasonBadEKCertificate:
		return "EK certificate refused"
	case tpmdecide.ReasonNoChallenge:
		return "no pending TPM challenge (never issued, already answered, or expired): register again without a SAS token"
	case tpmdecide.ReasonChallengeMismatch:
		return "the TPM challenge was issued for other keys"
	case tpmdecide.ReasonBadSAS:
		return "Unauthorized: the SAS token does not verify"
	}
	return "unauthorized"
}
