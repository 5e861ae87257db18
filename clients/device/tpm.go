package device

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"time"

	"github.com/dpsbroker/dpsbroker/provisioning/wire"
)

// provisionTPM runs TPM attestation on sess (PROTOCOL.md §4, dpsbroker's
// MQTT flow): register with the EK and SRK, import the challenge's key into
// the TPM, answer with a SAS token signed there (in the next register
// request, or as the password of a new connection), then poll as usual.
// On assignment the key of registrationState.tpm.authenticationKey is
// imported too, replacing the challenge key. It closes sess.
func provisionTPM(ctx context.Context, s *settings, log *slog.Logger, sess *session) (*wire.DeviceRegistrationResult, error) {
	tpmBody := &wire.TPMAttestation{
		EndorsementKey: base64.StdEncoding.EncodeToString(s.TPM.EndorsementKey()),
		StorageRootKey: base64.StdEncoding.EncodeToString(s.TPM.StorageRootKey()),
	}
	if len(s.EKCertificate) > 0 {
		tpmBody.EndorsementKeyCertificate = base64.StdEncoding.EncodeToString(s.EKCertificate)
		for _, c := range s.EKCertificateChain {
			tpmBody.EndorsementKeyCertificateChain = append(tpmBody.EndorsementKeyCertificateChain, base64.StdEncoding.EncodeToString(c))
		}
	}
	topic := func(rid string) []byte { return wire.AppendRegisterTopic(nil, rid) }

	sess.acceptChallenge = true
	resp, err := sess.exchange(ctx, "register (tpm)", topic, tpmRegisterBody(s, tpmBody))
	sess.acceptChallenge = false
	if err != nil {
		sess.close(ctx, true)
		return nil, err
	}
	if resp.status != 401 {
		// Already admitted without a challenge (not dpsbroker's way, but
		// nothing forbids it).
		res, err := sess.follow(ctx, resp)
		sess.close(ctx, true)
		return importResultKey(ctx, s, log, res, err)
	}
	ch, err := wire.DecodeTPMChallenge(resp.body)
	if err != nil {
		sess.close(ctx, true)
		return nil, fmt.Errorf("device: %w", err)
	}
	log.Debug("TPM challenge received", "key_name", ch.KeyName, "blob_len", len(ch.AuthenticationKey))
	if err := s.TPM.ActivateAndImport(ctx, ch.AuthenticationKey); err != nil {
		sess.close(ctx, true)
		return nil, fmt.Errorf("device: import the TPM challenge: %w", err)
	}
	token, err := s.TPM.SignSAS(ctx, s.IDScope+"/registrations/"+s.RegistrationID, time.Now().Add(s.SASTTL))
	if err != nil {
		sess.close(ctx, true)
		return nil, fmt.Errorf("device: sign the SAS token in the TPM: %w", err)
	}
	log.Debug("TPM challenge answered", "ttl", s.SASTTL, "reconnect", s.AnswerOnReconnect)

	if s.AnswerOnReconnect {
		sess.close(ctx, true)
		if sess, err = connectWith(ctx, s, log, token); err != nil {
			return nil, err
		}
	} else {
		tpmBody.SASToken = token
	}
	res, err := func() (*wire.DeviceRegistrationResult, error) {
		resp, err := sess.exchange(ctx, "register (tpm answer)", topic, tpmRegisterBody(s, tpmBody))
		if err != nil {
			return nil, err
		}
		return sess.follow(ctx, resp)
	}()
	sess.close(ctx, true)
	return importResultKey(ctx, s, log, res, err)
}

func tpmRegisterBody(s *settings, t *wire.TPMAttestation) []byte {
	b, _ := json.Marshal(wire.RegisterRequest{RegistrationID: s.RegistrationID, TPM: t, Payload: s.Payload})
	return b // strings, a checked RawMessage: Marshal cannot fail
}

// importResultKey imports the key the assignment carries, so that the
// TPM holds the key for the hub (the Azure SDKs do the same).
func importResultKey(ctx context.Context, s *settings, log *slog.Logger, res *wire.DeviceRegistrationResult, err error) (*wire.DeviceRegistrationResult, error) {
	if err != nil || res == nil || res.TPM == nil || res.TPM.AuthenticationKey == "" {
		return res, err
	}
	if err := s.TPM.ActivateAndImport(ctx, res.TPM.AuthenticationKey); err != nil {
		return res, fmt.Errorf("device: assigned, but importing registrationState.tpm.authenticationKey failed: %w", err)
	}
	log.Debug("TPM key of the assignment imported")
	return res, nil
}

// isChallenge reports whether a 401 body is a TPM challenge rather than an
// error.
func isChallenge(body []byte) bool {
	_, err := wire.DecodeTPMChallenge(body)
	return err == nil
}
