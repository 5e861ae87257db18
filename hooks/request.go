package hooks

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/dpsbroker/dpsbroker/provisioning"
	"github.com/dpsbroker/dpsbroker/provisioning/wire"
	"github.com/dpsbroker/dpsbroker/provisioning/x509attest"
)

// OnPublish consumes every device publish: it is acknowledged by mochi as
// usual but never routed or retained. The request is handled in
// OnPublished, which mochi calls after it has written the PUBACK (or
// PUBREC), so that the response always follows the acknowledgement (C# v1
// requires that order). Publishes of the inline client (events) pass.
func (h *DPS) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.Net.Inline {
		return pk, nil
	}
	s := h.sessions.get(cl)
	if s == nil {
		return pk, nil
	}
	if !s.kind.device() {
		return pk, packets.ErrRejectPacket // the ACL already refuses service publishes
	}
	return pk, packets.CodeSuccessIgnore
}

// OnPublished handles a device request and writes the response to the
// requesting connection. It runs on the device's read goroutine, with the
// store work bounded by RequestTimeout.
func (h *DPS) OnPublished(cl *mqtt.Client, pk packets.Packet) {
	if cl.Net.Inline {
		return
	}
	s := h.sessions.get(cl)
	if s == nil || !s.kind.device() {
		return
	}
	r := h.handle(s, pk)
	r.rid = ridOf(pk.TopicName, r.rid)
	topic := wire.AppendResponseTopic(make([]byte, 0, 96+len(r.rid)), r.status, r.rid, r.retryAfter)
	if err := h.deliver(cl, string(topic), r.body); err != nil {
		h.log.Debug("response not delivered", "client", cl.ID, "status", r.status, "error", err)
	}
}

// response is one answer to a device request.
type response struct {
	status     int
	rid        string
	retryAfter int
	body       []byte
}

func (h *DPS) handle(s *session, pk packets.Packet) response {
	req, err := wire.ParseRequestTopic(pk.TopicName)
	if err != nil {
		var te *wire.TopicError
		code := wire.ErrorCodeBadTopic
		if errors.As(err, &te) {
			code = te.ErrorCode()
		}
		return h.errorResponse(code, err.Error(), s, nil)
	}
	switch req.Kind {
	case wire.RequestRegister:
		return h.register(s, req, pk.Payload)
	default:
		return h.poll(s, req)
	}
}

func (h *DPS) register(s *session, req wire.Request, body []byte) response {
	rr, err := wire.DecodeRegisterRequest(body)
	if err != nil {
		code := wire.ErrorCodeInvalidJSON
		var pe *wire.PayloadError
		if errors.As(err, &pe) {
			code = pe.ErrorCode()
		}
		return h.errorResponse(code, err.Error(), s, &req)
	}
	if rr.RegistrationID != "" && !strings.EqualFold(rr.RegistrationID, s.registrationID) {
		return h.errorResponse(wire.ErrorCodeRegistrationIDMismatch,
			"registrationId of the body differs from the registration ID of the CONNECT username", s, &req)
	}
	if s.kind == kindUnauthenticated {
		if rr.TPM == nil || h.opts.TPM == nil {
			// Symmetric-key attestation is not implemented: without a
			// certificate, only a TPM can prove anything.
			return h.errorResponse(wire.ErrorCodeUnauthorized,
				"Unauthorized: present a client certificate, or TPM attestation (tpm.endorsementKey)", s, &req)
		}
		if ok, wait := s.registers.take(time.Now(), h.opts.PollBurst, h.opts.MinPollInterval); !ok {
			return h.throttled(wire.ErrorCodeThrottled, "too many register requests", wait, s, &req)
		}
		return h.registerTPM(s, req, rr)
	}
	if rr.TPM != nil {
		return h.errorResponse(wire.ErrorCodeBadRequest, "TPM attestation in an X.509 session", s, &req)
	}
	if ok, wait := s.registers.take(time.Now(), h.opts.PollBurst, h.opts.MinPollInterval); !ok {
		return h.throttled(wire.ErrorCodeThrottled, "too many register requests", wait, s, &req)
	}

	ctx, cancel := h.requestContext()
	defer cancel()
	// The decision is taken again, so that an entry disabled since CONNECT
	// takes effect even if the change feed lags; it is served from the
	// evaluator's cache in the common case.
	dec, err := h.opts.Decider.Decide(ctx, s.chain)
	if err != nil {
		return h.unavailable(ctx, err, s, &req)
	}
	if dec.Outcome != x509attest.Provision || !strings.EqualFold(dec.RegistrationID, s.registrationID) {
		if dec.Outcome == x509attest.Provision {
			dec = &x509attest.Decision{Reason: reasonCNMismatch, ErrorCode: wire.ErrorCodeInvalidCertificate,
				Explanation: "certificate CN differs from the registration ID"}
		}
		h.refused(s.registrationID, dec)
		code := dec.ErrorCode
		if code == 0 {
			code = wire.ErrorCodeInvalidCertificate
		}
		return h.errorResponse(code, shortReason(dec.Reason), s, &req)
	}
	op, err := h.opts.Registrar.Register(ctx, admission(s.registrationID, dec), rr.Payload)
	if err != nil {
		return h.unavailable(ctx, err, s, &req)
	}
	return h.registered(s, op)
}

// admission turns a provisioning decision into the service's input.
func admission(regID string, dec *x509attest.Decision) *provisioning.Admission {
	return &provisioning.Admission{
		RegistrationID:         regID,
		DeviceID:               dec.DeviceID,
		AttestationType:        provisioning.AttestationX509,
		Enrollment:             dec.Enrollment,
		Group:                  dec.Group,
		CertificateInfo:        dec.Certificate,
		SigningCertificateInfo: dec.SigningCertificate,
		Explanation:            dec.Explanation,
	}
}

func (h *DPS) poll(s *session, req wire.Request) response {
	if ok, wait := s.polls.take(time.Now(), h.opts.PollBurst, h.opts.MinPollInterval); !ok {
		return h.throttled(wire.ErrorCodePollingTooFast, "operation status polled too often", wait, s, &req)
	}
	ctx, cancel := h.requestContext()
	defer cancel()
	op, err := h.opts.Registrar.Operation(ctx, s.registrationID, req.OperationID)
	switch {
	case errors.Is(err, provisioning.ErrNotFound):
		return h.errorResponse(wire.ErrorCodeOperationNotFound, "operation not found", s, &req)
	case err != nil:
		return h.unavailable(ctx, err, s, &req)
	}
	return h.operationResponse(s, op)
}

// operationResponse is the answer for an operation's current state: 202
// with retry-after while it is in progress, else 200 with the final
// RegistrationOperationStatus. Polls use it, and so do register requests
// on the fast path.
func (h *DPS) operationResponse(s *session, op *provisioning.Operation) response {
	st := wire.Status(op.Status)
	if !st.Final() {
		return h.jsonResponse(202, h.retryAfter, &wire.RegistrationOperationStatus{
			OperationID: op.OperationID, Status: wire.StatusAssigning,
		})
	}
	tpmKey := ""
	if t := s.tpm; t != nil && t.operation != "" && t.operation == op.OperationID {
		tpmKey = t.key
	}
	return h.jsonResponse(200, 0, &wire.RegistrationOperationStatus{
		OperationID:       op.OperationID,
		Status:            st,
		RegistrationState: deviceResult(op.Result, st, tpmKey),
	})
}

// deviceResult is the device's view of a registration record.
// tpmKey is the authenticationKey of a TPM device's answered challenge,
// "" when unknown.
func deviceResult(r *provisioning.RegistrationState, st wire.Status, tpmKey string) *wire.DeviceRegistrationResult {
	if r == nil {
		return nil
	}
	out := &wire.DeviceRegistrationResult{
		RegistrationID: r.RegistrationID,
		AssignedHub:    r.AssignedHub,
		DeviceID:       r.DeviceID,
		Status:         st,
		Substatus:      r.Substatus,
		ErrorCode:      r.ErrorCode,
		ErrorMessage:   r.ErrorMessage,
		ETag:           r.ETag,
		Payload:        r.Payload,
	}
	if r.CreatedDateTimeUTC != nil {
		out.CreatedDateTimeUTC = wire.NewTime(*r.CreatedDateTimeUTC)
	}
	if r.LastUpdatedDateTimeUTC != nil {
		out.LastUpdatedDateTimeUTC = wire.NewTime(*r.LastUpdatedDateTimeUTC)
	}
	if st != wire.StatusAssigned {
		// C wants hub and device ID together, embedded C both or neither.
		out.AssignedHub, out.DeviceID = "", ""
	}
	if r.AttestationType == provisioning.AttestationTPM && st == wire.StatusAssigned && tpmKey != "" {
		out.TPM = &wire.TPMRegistrationResult{AuthenticationKey: tpmKey}
	}
	if r.AttestationType == provisioning.AttestationX509 {
		out.X509 = &wire.X509RegistrationResult{
			CertificateInfo:        r.CertificateInfo,
			EnrollmentGroupID:      r.EnrollmentGroupID,
			SigningCertificateInfo: r.SigningCertInfo,
		}
	}
	return out
}

// unavailable answers a store or service fault: the device retries (5xx).
func (h *DPS) unavailable(ctx context.Context, err error, s *session, req *wire.Request) response {
	code := wire.ErrorCodeInternal
	if errors.Is(err, provisioning.ErrStoreUnavailable) || errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil {
		code = wire.ErrorCodeStoreUnavailable
	}
	r := h.errorResponse(code, "service unavailable, retry later", s, req, "error", err)
	r.retryAfter = h.retryAfter
	return r
}

func (h *DPS) throttled(code int, msg string, wait time.Duration, s *session, req *wire.Request) response {
	r := h.errorResponse(code, msg, s, req)
	r.retryAfter = max(h.retryAfter, int((wait+time.Second-1)/time.Second))
	return r
}

// errorResponse builds an error body with a fresh tracking ID, logged with
// the cause so that a device owner's report can be found.
func (h *DPS) errorResponse(code int, msg string, s *session, req *wire.Request, logAttrs ...any) response {
	tracking := newTrackingID()
	attrs := append([]any{"registrationId", s.registrationID, "errorCode", code, "message", msg, "trackingId", tracking}, logAttrs...)
	if req != nil {
		attrs = append(attrs, "request", req.Kind.String())
	}
	if code >= 500000 {
		h.log.Error("device request failed", attrs...)
	} else {
		h.log.Info("device request refused", attrs...)
	}
	r := h.jsonResponse(wire.HTTPStatus(code), 0, wire.NewErrorDetails(code, tracking, msg, time.Now()))
	if req != nil {
		r.rid = req.RID
	}
	return r
}

func (h *DPS) jsonResponse(status, retryAfter int, v any) response {
	b, err := json.Marshal(v)
	if err != nil {
		// Every body is a plain struct of strings, numbers and times;
		// still, never answer without a JSON body.
		h.log.Error("marshal response", "error", err)
		status, b = 500, []byte(`{"errorCode":500000,"trackingId":"","message":"internal error","timestampUtc":"`+time.Now().UTC().Format(time.RFC3339)+`"}`)
	}
	return response{status: status, retryAfter: retryAfter, body: b}
}

func newTrackingID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// ridOf returns rid, or when the topic could not be parsed, a $rid that can
// be salvaged from it so that SDKs matching on $rid still see the error.
// Values that could not be echoed safely give "".
func ridOf(topic, rid string) string {
	if rid != "" {
		return rid
	}
	_, q, ok := strings.Cut(topic, "?")
	if !ok {
		return ""
	}
	for q != "" {
		var pair string
		pair, q, _ = strings.Cut(q, "&")
		if v, ok := strings.CutPrefix(pair, wire.ParamRID+"="); ok {
			if echoable(v) {
				return v
			}
			return ""
		}
	}
	return ""
}

// echoable mirrors the wire package's rule for values echoed in response
// topics.
func echoable(v string) bool {
	if v == "" || len(v) > wire.MaxRIDLen || !utf8.ValidString(v) {
		return false
	}
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < 0x20 || c == 0x7f || strings.IndexByte("#+=$", c) >= 0 {
			return false
		}
	}
	return true
}

// errNotSubscribed: the device has no subscription to the response filter,
// so, as on Azure, it receives nothing.
var errNotSubscribed = errors.New("device not subscribed to " + wire.ResponseFilter)

// deliver writes one response PUBLISH to cl alone, the way mochi's
// publishToClient delivers to one subscriber: QoS capped by the device's
// subscription (and 1), a packet ID from the client, the inflight store
// for QoS 1 (the device's PUBACK clears it), then WritePacket. It runs on
// the device's read goroutine after the request's PUBACK was written, and
// writes synchronously, so the response cannot overtake the ack.
func (h *DPS) deliver(cl *mqtt.Client, topic string, body []byte) error {
	sub, ok := cl.State.Subscriptions.Get(wire.ResponseFilter)
	if !ok {
		return errNotSubscribed
	}
	out := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: min(sub.Qos, 1)},
		TopicName:   topic,
		Payload:     body,
		Created:     time.Now().Unix(),
	}
	if out.FixedHeader.Qos > 0 {
		if cl.State.Inflight.Len() >= int(h.srv.Options.Capabilities.MaximumInflight) {
			return packets.ErrQuotaExceeded
		}
		id, err := cl.NextPacketID()
		if err != nil {
			return err
		}
		out.PacketID = uint16(id)
		if cl.State.Inflight.Set(out) {
			atomic.AddInt64(&h.srv.Info.Inflight, 1)
			cl.State.Inflight.DecreaseSendQuota()
		}
	}
	if err := cl.WritePacket(out); err != nil {
		if out.FixedHeader.Qos > 0 && cl.State.Inflight.Delete(out.PacketID) {
			atomic.AddInt64(&h.srv.Info.Inflight, -1)
			cl.State.Inflight.IncreaseSendQuota()
		}
		return err
	}
	return nil
}
