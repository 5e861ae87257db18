package load

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/dpsbroker/dpsbroker/cmd/dpsload/internal/mqttraw"
	"github.com/dpsbroker/dpsbroker/provisioning/wire"
)

// Phases of one provisioning, used in error reasons.
const (
	phaseDial      = "dial"
	phaseTLS       = "tls"
	phaseConnect   = "connect"
	phaseSubscribe = "subscribe"
	phaseRegister  = "register"
	phasePoll      = "poll"
)

// remoteAlert prefixes the text of a TLS alert received from the peer.
const remoteAlert = "remote error: tls: "

// opError is a failed provisioning with its reason key, the label under
// which it is counted ("connack:0x87", "dps:401:401002", "timeout:tls").
type opError struct {
	reason string
	err    error
}

func (e *opError) Error() string { return e.reason + ": " + e.err.Error() }
func (e *opError) Unwrap() error { return e.err }

// classify turns an error of a phase into its reason key.
func classify(phase string, err error) *opError {
	var oe *opError
	if errors.As(err, &oe) {
		return oe
	}
	var (
		ne  net.Error
		cae *mqttraw.ConnackError
		sue *mqttraw.SubackError
		pue *mqttraw.PubackError
		die *mqttraw.DisconnectError
		une *mqttraw.UnexpectedError
	)
	reason := "error:" + phase
	switch {
	case errors.As(err, &cae):
		reason = fmt.Sprintf("connack:0x%02x", cae.Code)
		if code, _, ok := strings.Cut(cae.Reason, " "); ok && len(code) == 6 {
			reason += ":" + code // the DPS error code the broker puts first
		}
	case errors.As(err, &sue):
		reason = fmt.Sprintf("suback:0x%02x", sue.Code)
	case errors.As(err, &pue):
		reason = fmt.Sprintf("puback:0x%02x", pue.Code)
	case errors.As(err, &die):
		reason = fmt.Sprintf("disconnect:0x%02x", die.Code)
	case strings.Contains(err.Error(), remoteAlert):
		// Under TLS 1.3 a refused client certificate arrives as an alert
		// on the first read after the handshake. crypto/tls exposes
		// received alerts only as text (its alert type is unexported).
		_, alert, _ := strings.Cut(err.Error(), remoteAlert)
		reason = "tls-alert:" + strings.ReplaceAll(alert, " ", "-")
	case errors.As(err, &une), errors.Is(err, mqttraw.ErrMalformed), errors.Is(err, mqttraw.ErrTooLarge):
		reason = "protocol:" + phase
	case errors.As(err, &ne) && ne.Timeout(), errors.Is(err, context.DeadlineExceeded):
		reason = "timeout:" + phase
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed),
		strings.Contains(err.Error(), "connection reset"), strings.Contains(err.Error(), "broken pipe"):
		reason = "closed:" + phase
	case phase == phaseDial:
		reason = "dial"
	case phase == phaseTLS:
		reason = "tls"
	}
	return &opError{reason: reason, err: err}
}

// outcome is what one provisioning observed besides its error.
type outcome struct {
	curve   tls.CurveID
	resumed bool
	polls   int
	fast    bool // the register request was answered 200 at once
	// fromConnect is the time from sending CONNECT to reading the final
	// "assigned" answer: what the device waits once its TLS session is up.
	fromConnect time.Duration
}

// provision runs the whole device flow once: TLS, CONNECT, SUBSCRIBE,
// register, polls until final, DISCONNECT.
func (r *runner) provision(ctx context.Context, dev *Device, tgt *Target, deadline time.Time) (out outcome, err error) {
	d := net.Dialer{Deadline: deadline}
	raw, err := d.DialContext(ctx, "tcp", tgt.Addr)
	if err != nil {
		return out, classify(phaseDial, err)
	}
	defer func() { _ = raw.Close() }()
	_ = raw.SetDeadline(deadline)
	// Reads and writes do not watch ctx: expire them when it ends.
	defer context.AfterFunc(ctx, func() { _ = raw.SetDeadline(time.Now()) })()

	cfg := tgt.TLS.Clone()
	if cert := dev.Cred.ClientCertificate(); cert != nil {
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
	}
	if r.cfg.Resume {
		cfg.ClientSessionCache = dev.sessions
	}
	tc := tls.Client(raw, cfg)
	defer func() { _ = tc.Close() }() // close_notify, as device TLS stacks send
	if err := tc.HandshakeContext(ctx); err != nil {
		return out, classify(phaseTLS, err)
	}
	cs := tc.ConnectionState()
	out.curve, out.resumed = cs.CurveID, cs.DidResume

	c := mqttraw.NewClient(tc, r.cfg.MQTTVersion)
	connectAt := time.Now()
	if _, err := c.Connect(mqttraw.Connect{
		ClientID:   dev.RegistrationID,
		Username:   wire.FormatUsername(r.cfg.IDScope, dev.RegistrationID, "", "dpsload"),
		Password:   dev.Cred.Password(time.Now()),
		KeepAlive:  60,
		CleanStart: true,
	}); err != nil {
		return out, classify(phaseConnect, err)
	}
	if _, err := c.Subscribe(wire.ResponseFilter, 1); err != nil {
		return out, classify(phaseSubscribe, err)
	}

	rid := dev.nextRID()
	status, retry, body, err := request(c, string(wire.AppendRegisterTopic(nil, rid)), rid, dev.body)
	if err != nil {
		return out, classify(phaseRegister, err)
	}
	out.fast = status == 200
	for {
		switch status {
		case 200:
			st, err := wire.DecodeOperationStatus(body)
			if err != nil {
				return out, &opError{reason: "protocol:body", err: err}
			}
			if st.Status != wire.StatusAssigned {
				reason := "dps:" + string(st.Status)
				if rs := st.RegistrationState; rs != nil && rs.ErrorCode != 0 {
					reason += fmt.Sprintf(":%d", rs.ErrorCode)
				}
				return out, &opError{reason: reason, err: fmt.Errorf("final status %q", st.Status)}
			}
			out.fromConnect = time.Since(connectAt)
			_ = c.Disconnect()
			return out, nil
		case 202:
			st, err := wire.DecodeOperationStatus(body)
			if err != nil || st.OperationID == "" {
				return out, &opError{reason: "protocol:body", err: fmt.Errorf("202 without operationId: %w", err)}
			}
			if out.polls >= r.cfg.MaxPolls {
				return out, &opError{reason: "dps:too-many-polls", err: fmt.Errorf("still assigning after %d polls", out.polls)}
			}
			if err := sleep(ctx, r.pollDelay(retry), deadline); err != nil {
				return out, classify(phasePoll, err)
			}
			out.polls++
			rid = dev.nextRID()
			status, retry, body, err = request(c, string(wire.AppendPollTopic(nil, rid, st.OperationID)), rid, []byte(" "))
			if err != nil {
				return out, classify(phasePoll, err)
			}
		default:
			reason := fmt.Sprintf("dps:%d", status)
			if d, err := wire.DecodeErrorDetails(body); err == nil && d.ErrorCode != 0 {
				reason += fmt.Sprintf(":%d", d.ErrorCode)
			}
			return out, &opError{reason: reason, err: fmt.Errorf("status %d: %s", status, bytes.TrimSpace(body))}
		}
	}
}

// pollDelay is how long to wait before polling: the override when set,
// else the broker's retry-after (2 s when it sent none, as the Node SDK
// does).
func (r *runner) pollDelay(retryAfter time.Duration) time.Duration {
	if r.cfg.PollAfter >= 0 {
		return r.cfg.PollAfter
	}
	if retryAfter <= 0 {
		return 2 * time.Second
	}
	return retryAfter
}

// sleep waits d, or fails when ctx ends or the deadline would pass first.
func sleep(ctx context.Context, d time.Duration, deadline time.Time) error {
	if d <= 0 {
		return nil
	}
	if time.Now().Add(d).After(deadline) {
		return fmt.Errorf("poll delay %v passes the operation deadline: %w", d, context.DeadlineExceeded)
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// request publishes one QoS 1 request and waits for both its PUBACK and
// the response carrying its $rid, acknowledging QoS 1 responses. Brokers
// send the PUBACK first; the order is not required here.
func request(c *mqttraw.Client, topic, rid string, body []byte) (status int, retry time.Duration, resp []byte, err error) {
	id, err := c.Publish(topic, 1, body)
	if err != nil {
		return 0, 0, nil, err
	}
	acked, answered := false, false
	for !acked || !answered {
		p, err := c.Read()
		if err != nil {
			return 0, 0, nil, err
		}
		switch p.Type {
		case mqttraw.TypePuback:
			ack, err := mqttraw.ParsePuback(c.Version(), p.Body)
			if err != nil {
				return 0, 0, nil, err
			}
			if ack.PacketID != id {
				continue
			}
			if ack.Code >= 0x80 {
				return 0, 0, nil, &mqttraw.PubackError{Code: ack.Code}
			}
			acked = true
		case mqttraw.TypePublish:
			pub, err := mqttraw.ParsePublish(c.Version(), p.Flags, p.Body)
			if err != nil {
				return 0, 0, nil, err
			}
			if pub.QoS > 0 {
				if err := c.Ack(pub.PacketID); err != nil {
					return 0, 0, nil, err
				}
			}
			st, gotRID, ra, err := wire.ParseResponseTopic(pub.Topic)
			if err != nil || gotRID != rid {
				continue // not ours: a stale answer, or not a response
			}
			status, retry, resp, answered = st, ra, bytes.Clone(pub.Payload), true
		case mqttraw.TypePingresp:
		default:
			return 0, 0, nil, &mqttraw.UnexpectedError{Type: p.Type}
		}
	}
	return status, retry, resp, nil
}
