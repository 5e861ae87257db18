package brokertest

import (
	"context"
	"crypto/rand"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
	"github.com/gorilla/websocket"

	"github.com/dpsbroker/dpsbroker/provisioning"
	"github.com/dpsbroker/dpsbroker/provisioning/pkitest"
	"github.com/dpsbroker/dpsbroker/provisioning/wire"
)

// ConnectError is a CONNECT the broker refused.
type ConnectError struct {
	// ReasonCode is the MQTT 5 CONNACK reason (0x87 not authorized, ...).
	ReasonCode byte
	// Reason is the reason string: a DPS error code and a short reason,
	// such as "401002 enrollment group disabled".
	Reason string
}

func (e *ConnectError) Error() string {
	return fmt.Sprintf("connect refused: reason 0x%02x %q", e.ReasonCode, e.Reason)
}

// Unwrap makes errors.Is(err, ErrRefused) true.
func (e *ConnectError) Unwrap() error { return errRefused }

// ErrRefused is wrapped by every *ConnectError.
var ErrRefused = errRefused

// ResponseError is a non-2xx answer to a register or poll request.
type ResponseError struct {
	Status  int
	Details *wire.ErrorDetails // nil when the body was not an error object
}

func (e *ResponseError) Error() string {
	if e.Details != nil {
		return fmt.Sprintf("status %d: %d %s", e.Status, e.Details.ErrorCode, e.Details.Message)
	}
	return fmt.Sprintf("status %d", e.Status)
}

// Session is one device connection speaking the DPS dialect over
// paho.golang (MQTT 5): connected and subscribed to the response filter.
type Session struct {
	// Client is the paho client, for tests that go off the beaten path.
	Client *paho.Client
	// Disconnected is closed when the broker disconnects the session
	// (DISCONNECT from the server or a closed connection).
	Disconnected <-chan struct{}

	regID     string
	responses chan *paho.Publish
	rid       int
}

// receiveMaximum is what test devices announce in CONNECT.
var receiveMaximum uint16 = 16

// Connect opens a device session as dev over TLS: CONNECT with the DPS
// username and client ID = dev's CN, then SUBSCRIBE to the response
// filter. A refused CONNECT returns a *ConnectError.
func (b *Broker) Connect(ctx context.Context, dev *pkitest.Leaf) (*Session, error) {
	conn, err := b.Dial(ctx, dev)
	if err != nil {
		return nil, err
	}
	regID := ""
	if dev != nil {
		regID = dev.Cert.Subject.CommonName
	}
	return b.ConnectConn(ctx, conn, regID)
}

// ConnectConn is Connect over a connection the caller opened (WebSocket,
// or a TLS connection with unusual settings).
func (b *Broker) ConnectConn(ctx context.Context, conn net.Conn, registrationID string) (*Session, error) {
	s := &Session{regID: registrationID, responses: make(chan *paho.Publish, 16)}
	gone := make(chan struct{})
	s.Disconnected = gone
	var once sync.Once
	closeGone := func() { once.Do(func() { close(gone) }) }
	c := paho.NewClient(paho.ClientConfig{
		Conn: packets.NewThreadSafeConn(conn),
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			select {
			case s.responses <- pr.Packet:
			default:
			}
			return true, nil
		}},
		OnServerDisconnect: func(*paho.Disconnect) { closeGone() },
		OnClientError:      func(error) { closeGone() },
	})
	s.Client = c
	ca, err := c.Connect(ctx, &paho.Connect{
		ClientID:     registrationID,
		Username:     b.Username(registrationID),
		UsernameFlag: true,
		CleanStart:   true,
		KeepAlive:    30,
		// paho sizes a channel by the receive maximum (65535 slots,
		// 512 KiB per connection, by default); a device gets one
		// response at a time. A Properties struct also carries Request
		// Problem Information, which must stay 1 (the MQTT default) for
		// refusals to keep their reason string.
		Properties: &paho.ConnectProperties{ReceiveMaximum: &receiveMaximum, RequestProblemInfo: true},
	})
	if err != nil {
		_ = conn.Close()
		if ca != nil && ca.ReasonCode >= 0x80 {
			reason := ""
			if ca.Properties != nil {
				reason = ca.Properties.ReasonString
			}
			return nil, &ConnectError{ReasonCode: ca.ReasonCode, Reason: reason}
		}
		return nil, fmt.Errorf("connect: %w", err)
	}
	if _, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: wire.ResponseFilter, QoS: 1}}}); err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("subscribe: %w", err)
	}
	return s, nil
}

// Close disconnects the session.
func (s *Session) Close() {
	_ = s.Client.Disconnect(&paho.Disconnect{ReasonCode: 0})
}

// Request publishes one request (QoS 1) and returns the response's status
// and body.
func (s *Session) Request(ctx context.Context, topic string, body []byte) (status int, resp []byte, err error) {
	if _, err := s.Client.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Payload: body}); err != nil {
		return 0, nil, fmt.Errorf("publish: %w", err)
	}
	select {
	case pk := <-s.responses:
		st, _, _, err := wire.ParseResponseTopic(pk.Topic)
		if err != nil {
			return 0, nil, err
		}
		return st, pk.Payload, nil
	case <-s.Disconnected:
		return 0, nil, errors.New("disconnected by the broker")
	case <-ctx.Done():
		return 0, nil, ctx.Err()
	}
}

// Register sends a register request and, after the 202, polls the
// operation at once (the broker finishes the registration before it
// answers, so no retry-after wait is needed) until it is final.
func (s *Session) Register(ctx context.Context) (*wire.RegistrationOperationStatus, error) {
	body, _ := json.Marshal(map[string]string{"registrationId": s.regID})
	s.rid++
	st, resp, err := s.Request(ctx, string(wire.AppendRegisterTopic(nil, strconv.Itoa(s.rid))), body)
	for {
		if err != nil {
			return nil, err
		}
		switch {
		case st == 200:
			return wire.DecodeOperationStatus(resp)
		case st == 202:
			op, err := wire.DecodeOperationStatus(resp)
			if err != nil {
				return nil, err
			}
			s.rid++
			st, resp, err = s.Request(ctx, string(wire.AppendPollTopic(nil, strconv.Itoa(s.rid), op.OperationID)), []byte(" "))
			if err != nil {
				return nil, err
			}
		default:
			d, _ := wire.DecodeErrorDetails(resp)
			return nil, &ResponseError{Status: st, Details: d}
		}
	}
}

// Provision connects as dev, registers, and disconnects: the whole device
// flow. It returns the final operation status (assigned or failed), a
// *ConnectError when the broker refused the device at CONNECT, or a
// *ResponseError for an error response.
func (b *Broker) Provision(ctx context.Context, dev *pkitest.Leaf) (*wire.RegistrationOperationStatus, error) {
	s, err := b.Connect(ctx, dev)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	return s.Register(ctx)
}

func decodeEvent(b []byte) (*provisioning.Event, error) {
	var ev provisioning.Event
	if err := json.Unmarshal(b, &ev); err != nil {
		return nil, err
	}
	return &ev, nil
}

func pkixName(cn string) pkix.Name { return pkix.Name{CommonName: cn + " " + randomSuffix()} }

func randomSuffix() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// DialWebSocket opens an MQTT-over-secure-WebSocket connection to WSURL as
// dev (subprotocol "mqtt"), as a net.Conn for paho.golang.
func (b *Broker) DialWebSocket(ctx context.Context, dev *pkitest.Leaf) (net.Conn, error) {
	d := websocket.Dialer{TLSClientConfig: b.TLSConfigFor(dev), Subprotocols: []string{"mqtt"}, HandshakeTimeout: 10 * time.Second}
	c, _, err := d.DialContext(ctx, b.WSURL(), nil)
	if err != nil {
		return nil, err
	}
	return &wsClientConn{Conn: c.NetConn(), ws: c}, nil
}

// wsClientConn is the client side of MQTT over WebSocket: binary messages
// carry the byte stream.
type wsClientConn struct {
	net.Conn
	ws *websocket.Conn
	r  io.Reader
}

func (c *wsClientConn) Read(p []byte) (int, error) {
	for {
		if c.r == nil {
			_, r, err := c.ws.NextReader()
			if err != nil {
				return 0, err
			}
			c.r = r
		}
		n, err := c.r.Read(p)
		if errors.Is(err, io.EOF) {
			c.r = nil
			if n == 0 {
				continue
			}
			err = nil
		}
		return n, err
	}
}

func (c *wsClientConn) Write(p []byte) (int, error) {
	if err := c.ws.WriteMessage(websocket.BinaryMessage, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (c *wsClientConn) Close() error { return c.ws.Close() }
