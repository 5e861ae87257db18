package device

import (
	"context"
	crand "crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"sync"
	"time"

	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"

	"github.com/dpsbroker/dpsbroker/provisioning/wire"
)

// closeGrace bounds the goodbye (UNSUBSCRIBE, DISCONNECT) and, once ctx
// is done, any network write still in progress.
const closeGrace = 2 * time.Second

// Provision registers the device described by cfg with the broker and
// returns its registration state once assigned. The whole run is bounded
// by ctx; give it a deadline.
//
// It behaves like the DPS device SDKs (see the package documentation):
// one connection, SUBSCRIBE before the first request, requests correlated
// by a fresh random $rid, retry-after honoured as a floor, 429 and 5xx
// retried with backoff, UNSUBSCRIBE and DISCONNECT at the end.
//
// Errors: *ConnectError for a CONNACK refusal, *Error for an error
// response, *RegistrationError for a final failed or disabled status,
// ErrInvalidConfig for a bad cfg, ErrConnectionLost, or ctx's error.
func Provision(ctx context.Context, cfg Config) (*wire.DeviceRegistrationResult, error) {
	s, err := cfg.resolve()
	if err != nil {
		return nil, err
	}
	log := s.Logger.With("registration_id", s.RegistrationID)
	for attempt := 1; ; attempt++ {
		sess, err := connect(ctx, s, log)
		var ce *ConnectError
		if errors.As(err, &ce) && ce.Temporary() && attempt < s.MaxAttempts {
			wait := s.backoff(attempt, 0)
			log.Debug("broker busy; retrying the connection", "reason_code", fmt.Sprintf("0x%02x", ce.ReasonCode), "wait", wait, "attempt", attempt)
			if err := sleep(ctx, wait, nil); err != nil {
				return nil, fmt.Errorf("device: waiting to reconnect: %w", err)
			}
			continue
		}
		if err != nil {
			return nil, err
		}
		if s.TPM != nil {
			return provisionTPM(ctx, s, log, sess)
		}
		res, err := sess.register(ctx)
		sess.close(ctx, true)
		return res, err
	}
}

// session is one MQTT connection of a provisioning run.
type session struct {
	s    *settings
	log  *slog.Logger
	conn net.Conn // the TLS connection, for deadlines
	pc   *paho.Client

	mu      sync.Mutex
	waiters map[string]chan response // by $rid

	// acceptChallenge makes exchange return a 401 TPM challenge instead
	// of an *Error (the first TPM register request).
	acceptChallenge bool

	lostOnce sync.Once
	lost     chan struct{} // closed when the connection ends
	lostErr  error         // set before lost is closed
	stopCtx  func() bool
}

// response is one message on the response topic.
type response struct {
	status     int
	retryAfter time.Duration
	body       []byte
}

// connect dials TLS, sends CONNECT and SUBSCRIBEs the response filter.
func connect(ctx context.Context, s *settings, log *slog.Logger) (*session, error) {
	return connectWith(ctx, s, log, "")
}

// connectWith connects with password as the MQTT password ("" sends none).
func connectWith(ctx context.Context, s *settings, log *slog.Logger, password string) (*session, error) {
	cctx, cancel := context.WithTimeout(ctx, s.ConnectTimeout)
	defer cancel()

	log.Debug("dialing", "broker", s.Broker)
	raw, err := s.Dialer(cctx, "tcp", s.Broker)
	if err != nil {
		return nil, fmt.Errorf("device: dial %s: %w", s.Broker, err)
	}
	conn := tls.Client(raw, s.tls)
	if err := conn.HandshakeContext(cctx); err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("device: TLS handshake with %s: %w", s.Broker, err)
	}
	st := conn.ConnectionState()
	chainSent := 0
	if len(s.tls.Certificates) > 0 {
		chainSent = len(s.tls.Certificates[0].Certificate)
	}
	log.Debug("TLS established", "version", tls.VersionName(st.Version), "server_name", s.tls.ServerName,
		"chain_sent", chainSent)

	sess := &session{
		s:       s,
		log:     log,
		conn:    conn,
		waiters: make(map[string]chan response),
		lost:    make(chan struct{}),
	}
	// Once ctx is done, nothing may block on the network for longer than
	// closeGrace: the deadline unblocks paho's reads and writes.
	sess.stopCtx = context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Now().Add(closeGrace)) })
	sess.pc = paho.NewClient(paho.ClientConfig{
		Conn:              packets.NewThreadSafeConn(conn),
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){sess.onPublish},
		OnServerDisconnect: func(d *paho.Disconnect) {
			reason := ""
			if d.Properties != nil {
				reason = d.Properties.ReasonString
			}
			sess.connectionLost(fmt.Errorf("%w: server sent DISCONNECT 0x%02x %s", ErrConnectionLost, d.ReasonCode, reason))
		},
		OnClientError: func(err error) { sess.connectionLost(fmt.Errorf("%w: %w", ErrConnectionLost, err)) },
	})

	log.Debug("sending CONNECT", "client_id", s.RegistrationID, "username", s.username, "keepalive", s.KeepAlive,
		"password_len", len(password))
	cp := &paho.Connect{
		ClientID:     s.RegistrationID,
		Username:     s.username,
		UsernameFlag: true,
		KeepAlive:    uint16(s.KeepAlive / time.Second),
		CleanStart:   true,
	}
	if password != "" {
		cp.Password, cp.PasswordFlag = []byte(password), true
	}
	ca, err := sess.pc.Connect(cctx, cp)
	if err != nil {
		sess.stopCtx()
		_ = conn.Close()
		if ca != nil && ca.ReasonCode >= 0x80 {
			ce := &ConnectError{ReasonCode: ca.ReasonCode}
			if ca.Properties != nil {
				ce.Reason = ca.Properties.ReasonString
			}
			log.Debug("CONNACK refused", "reason_code", fmt.Sprintf("0x%02x", ce.ReasonCode), "reason", ce.Reason)
			return nil, ce
		}
		return nil, fmt.Errorf("device: MQTT connect: %w", ctxErr(cctx, err))
	}
	log.Debug("connected", "session_present", ca.SessionPresent)

	log.Debug("subscribing", "filter", wire.ResponseFilter)
	sa, err := sess.pc.Subscribe(ctx, &paho.Subscribe{
		Subscriptions: []paho.SubscribeOptions{{Topic: wire.ResponseFilter, QoS: 1}},
	})
	if err != nil {
		sess.close(ctx, false)
		if sa != nil && len(sa.Reasons) > 0 {
			return nil, fmt.Errorf("device: subscribe %s refused with 0x%02x: %w", wire.ResponseFilter, sa.Reasons[0], err)
		}
		return nil, fmt.Errorf("device: subscribe %s: %w", wire.ResponseFilter, sess.cause(ctx, err))
	}
	granted := make([]int, len(sa.Reasons))
	for i, q := range sa.Reasons {
		granted[i] = int(q)
	}
	log.Debug("subscribed", "granted_qos", granted)
	return sess, nil
}

// register runs the DPS exchange: register, then poll until a final
// status.
func (sess *session) register(ctx context.Context) (*wire.DeviceRegistrationResult, error) {
	body, err := json.Marshal(wire.RegisterRequest{RegistrationID: sess.s.RegistrationID, Payload: sess.s.Payload})
	if err != nil {
		return nil, fmt.Errorf("device: encode register request: %w", err)
	}
	resp, err := sess.exchange(ctx, "register", func(rid string) []byte {
		return wire.AppendRegisterTopic(nil, rid)
	}, body)
	if err != nil {
		return nil, err
	}
	return sess.follow(ctx, resp)
}

// follow polls the operation a register request's 200 or 202 started
// until a final status.
func (sess *session) follow(ctx context.Context, resp response) (*wire.DeviceRegistrationResult, error) {
	operationID := ""
	for {
		st, err := wire.DecodeOperationStatus(resp.body)
		if err != nil {
			return nil, fmt.Errorf("device: status %d response: %w", resp.status, err)
		}
		if st.OperationID != "" {
			operationID = st.OperationID
		}
		sess.log.Debug("operation status", "status", st.Status, "operation_id", operationID)
		switch st.Status {
		case wire.StatusAssigned:
			if st.RegistrationState == nil {
				return nil, errors.New("device: assigned without a registrationState")
			}
			r := st.RegistrationState
			sess.log.Debug("assigned", "assigned_hub", r.AssignedHub, "device_id", r.DeviceID, "substatus", r.Substatus)
			return r, nil
		case wire.StatusFailed, wire.StatusDisabled:
			re := &RegistrationError{Status: st.Status, OperationID: operationID, State: st.RegistrationState}
			if r := st.RegistrationState; r != nil {
				re.ErrorCode, re.Message = r.ErrorCode, r.ErrorMessage
			}
			return nil, re
		}
		// assigning (or unassigned, which C and C# keep polling): poll the
		// operation after the broker's retry-after.
		if operationID == "" {
			return nil, fmt.Errorf("device: status %q without an operationId to poll", st.Status)
		}
		wait := resp.retryAfter
		if wait <= 0 {
			wait = sess.s.PollInterval
		}
		sess.log.Debug("waiting before polling", "wait", wait)
		if err := sleep(ctx, wait, sess.lost); err != nil {
			return nil, sess.waitErr("before polling", err)
		}
		op := operationID
		resp, err = sess.exchange(ctx, "poll", func(rid string) []byte {
			return wire.AppendPollTopic(nil, rid, op)
		}, nil)
		if err != nil {
			return nil, err
		}
	}
}

// exchange sends one request until it gets a 200 or 202: a 429 or 5xx
// is retried with a new $rid after a backoff whose floor is the
// response's retry-after; any other status is an *Error.
func (sess *session) exchange(ctx context.Context, kind string, topic func(rid string) []byte, body []byte) (response, error) {
	for attempt := 1; ; attempt++ {
		resp, err := sess.roundTrip(ctx, kind, topic, body)
		if err != nil {
			return response{}, err
		}
		switch {
		case resp.status == 200 || resp.status == 202:
			return resp, nil
		case resp.status == 401 && sess.acceptChallenge && isChallenge(resp.body):
			return resp, nil
		case transient(resp.status) && attempt < sess.s.MaxAttempts:
			wait := sess.s.backoff(attempt, resp.retryAfter)
			sess.log.Debug("broker asked to retry", "request", kind, "status", resp.status,
				"retry_after", resp.retryAfter, "wait", wait, "attempt", attempt)
			if err := sleep(ctx, wait, sess.lost); err != nil {
				return response{}, sess.waitErr("to retry "+kind, err)
			}
		default:
			e := &Error{Status: resp.status, RetryAfter: resp.retryAfter}
			if d, derr := wire.DecodeErrorDetails(resp.body); derr == nil {
				e.Details = *d
			} else if resp.status < 300 {
				return response{}, fmt.Errorf("device: unexpected status %d to %s", resp.status, kind)
			}
			if transient(resp.status) {
				return response{}, fmt.Errorf("device: %s: giving up after %d attempts: %w", kind, attempt, e)
			}
			return response{}, e
		}
	}
}

// roundTrip publishes one request with a fresh $rid and waits for the
// response carrying that $rid.
func (sess *session) roundTrip(ctx context.Context, kind string, topic func(rid string) []byte, body []byte) (response, error) {
	rid := newRID()
	ch := make(chan response, 1)
	sess.mu.Lock()
	sess.waiters[rid] = ch
	sess.mu.Unlock()
	defer func() {
		sess.mu.Lock()
		delete(sess.waiters, rid)
		sess.mu.Unlock()
	}()

	t := string(topic(rid))
	sess.log.Debug("publishing request", "request", kind, "rid", rid, "topic", t, "bytes", len(body))
	pr, err := sess.pc.Publish(ctx, &paho.Publish{Topic: t, QoS: 1, Payload: body})
	if err != nil {
		if pr != nil && pr.ReasonCode >= 0x80 {
			return response{}, fmt.Errorf("device: %s refused with PUBACK 0x%02x: %w", kind, pr.ReasonCode, err)
		}
		return response{}, fmt.Errorf("device: publish %s: %w", kind, sess.cause(ctx, err))
	}
	select {
	case r := <-ch:
		sess.log.Debug("response", "request", kind, "rid", rid, "status", r.status, "retry_after", r.retryAfter)
		return r, nil
	case <-sess.lost:
		return response{}, fmt.Errorf("device: waiting for the %s response: %w", kind, sess.lostErr)
	case <-ctx.Done():
		return response{}, fmt.Errorf("device: waiting for the %s response: %w", kind, ctx.Err())
	}
}

// onPublish hands a response to the request waiting for its $rid. It
// runs on paho's delivery goroutine and never blocks: each waiter's
// channel has room for one response and is removed when served, so a
// duplicate or a response for another $rid is dropped.
func (sess *session) onPublish(pr paho.PublishReceived) (bool, error) {
	status, rid, retryAfter, err := wire.ParseResponseTopic(pr.Packet.Topic)
	if err != nil {
		sess.log.Debug("ignoring publish", "topic", pr.Packet.Topic, "error", err)
		return false, nil
	}
	sess.mu.Lock()
	ch, ok := sess.waiters[rid]
	delete(sess.waiters, rid)
	sess.mu.Unlock()
	if !ok {
		sess.log.Debug("ignoring response for another $rid", "rid", rid, "status", status)
		return false, nil
	}
	ch <- response{status: status, retryAfter: retryAfter, body: pr.Packet.Payload}
	return true, nil
}

func (sess *session) connectionLost(err error) {
	sess.lostOnce.Do(func() {
		sess.lostErr = err
		close(sess.lost)
	})
}

// cause prefers the reason the connection ended, then ctx's error, over
// the generic error paho returns for an interrupted request.
func (sess *session) cause(ctx context.Context, err error) error {
	select {
	case <-sess.lost:
		return sess.lostErr
	default:
	}
	return ctxErr(ctx, err)
}

func (sess *session) waitErr(what string, err error) error {
	if errors.Is(err, errLost) {
		err = sess.lostErr
	}
	return fmt.Errorf("device: waiting %s: %w", what, err)
}

// close says goodbye: UNSUBSCRIBE (when asked and there is time) and
// DISCONNECT, each bounded by closeGrace.
func (sess *session) close(ctx context.Context, unsubscribe bool) {
	defer sess.stopCtx()
	select {
	case <-sess.lost:
		_ = sess.conn.Close()
		return
	default:
	}
	if unsubscribe && ctx.Err() == nil {
		uctx, cancel := context.WithTimeout(ctx, closeGrace)
		if _, err := sess.pc.Unsubscribe(uctx, &paho.Unsubscribe{Topics: []string{wire.ResponseFilter}}); err != nil {
			sess.log.Debug("unsubscribe failed", "error", err)
		} else {
			sess.log.Debug("unsubscribed", "filter", wire.ResponseFilter)
		}
		cancel()
	}
	_ = sess.conn.SetWriteDeadline(time.Now().Add(closeGrace))
	if err := sess.pc.Disconnect(&paho.Disconnect{ReasonCode: 0}); err != nil {
		sess.log.Debug("disconnect failed", "error", err)
	} else {
		sess.log.Debug("disconnected")
	}
}

// backoff is the wait before attempt+1 after a transient failure: an
// exponential step with jitter in [d/2, d], never less than floor (the
// broker's retry-after).
func (s *settings) backoff(attempt int, floor time.Duration) time.Duration {
	d := s.RetryBackoff
	for i := 1; i < attempt && d < s.MaxRetryBackoff; i++ {
		d *= 2
	}
	d = min(d, s.MaxRetryBackoff)
	d = d/2 + rand.N(d/2+1)
	return max(d, floor)
}

var errLost = errors.New("connection lost")

// sleep waits for d, or until ctx is done or lost is closed.
func sleep(ctx context.Context, d time.Duration, lost <-chan struct{}) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-lost:
		return errLost
	}
}

// ctxErr prefers ctx's error when ctx ended: paho reports a cancelled
// wait in its own words.
func ctxErr(ctx context.Context, err error) error {
	if cerr := ctx.Err(); cerr != nil && !errors.Is(err, cerr) {
		return fmt.Errorf("%w (%v)", cerr, err)
	}
	return err
}

// newRID returns a random $rid in the UUID form the Node and Python SDKs
// use, from crypto/rand so that no other client can predict it.
func newRID() string {
	var b [16]byte
	_, _ = crand.Read(b[:]) // never fails (Go 1.24+: it crashes instead)
	b[6] = b[6]&0x0f | 0x40 // version 4
	b[8] = b[8]&0x3f | 0x80 // RFC 4122 variant
	var out [36]byte
	hex.Encode(out[0:8], b[0:4])
	out[8] = '-'
	hex.Encode(out[9:13], b[4:6])
	out[13] = '-'
	hex.Encode(out[14:18], b[6:8])
	out[18] = '-'
	hex.Encode(out[19:23], b[8:10])
	out[23] = '-'
	hex.Encode(out[24:], b[10:])
	return string(out[:])
}
