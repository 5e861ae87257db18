package mqttraw

import (
	"bufio"
	"fmt"
	"net"
)

// DefaultMaxPacket bounds the packets a Client reads: a DPS response is a
// few KB at most.
const DefaultMaxPacket = 256 << 10

// ConnackError is a refused CONNECT.
type ConnackError struct {
	Version byte
	Code    byte
	Reason  string // MQTT 5 reason string, e.g. "401002 enrollment group disabled"
}

func (e *ConnackError) Error() string {
	if e.Reason != "" {
		return fmt.Sprintf("connect refused: code 0x%02x (%s)", e.Code, e.Reason)
	}
	return fmt.Sprintf("connect refused: code 0x%02x", e.Code)
}

// SubackError is a refused subscription.
type SubackError struct{ Code byte }

func (e *SubackError) Error() string { return fmt.Sprintf("subscription refused: code 0x%02x", e.Code) }

// PubackError is an MQTT 5 PUBACK with a failure reason code.
type PubackError struct{ Code byte }

func (e *PubackError) Error() string { return fmt.Sprintf("publish refused: code 0x%02x", e.Code) }

// DisconnectError is a DISCONNECT sent by the server.
type DisconnectError struct {
	Code   byte
	Reason string
}

func (e *DisconnectError) Error() string {
	return fmt.Sprintf("disconnected by the server: code 0x%02x %s", e.Code, e.Reason)
}

// UnexpectedError is a packet that the exchange did not expect.
type UnexpectedError struct{ Type byte }

func (e *UnexpectedError) Error() string { return fmt.Sprintf("unexpected packet type %d", e.Type) }

// Client drives one MQTT connection synchronously: each call writes its
// packet, flushes, and reads what it waits for on the caller's goroutine.
// Deadlines are the caller's, set on the net.Conn.
type Client struct {
	conn    net.Conn
	r       *bufio.Reader
	out     []byte
	buf     []byte
	v       byte
	nextID  uint16
	maxSize int
}

// NewClient wraps an established (TLS) connection for protocol level v.
func NewClient(conn net.Conn, v byte) *Client {
	return &Client{conn: conn, r: bufio.NewReaderSize(conn, 4096), out: make([]byte, 0, 512), v: v, maxSize: DefaultMaxPacket}
}

// Version is the protocol level of the connection.
func (c *Client) Version() byte { return c.v }

// NextID returns a fresh non-zero packet identifier.
func (c *Client) NextID() uint16 {
	c.nextID++
	if c.nextID == 0 {
		c.nextID = 1
	}
	return c.nextID
}

func (c *Client) flush() error {
	_, err := c.conn.Write(c.out)
	c.out = c.out[:0]
	return err
}

// Connect sends CONNECT and waits for CONNACK; a refusal is a *ConnackError.
func (c *Client) Connect(cn Connect) (Connack, error) {
	c.out = AppendConnect(c.out[:0], c.v, cn)
	if err := c.flush(); err != nil {
		return Connack{}, err
	}
	p, err := c.Read()
	if err != nil {
		return Connack{}, err
	}
	if p.Type != TypeConnack {
		return Connack{}, &UnexpectedError{Type: p.Type}
	}
	ca, err := ParseConnack(c.v, p.Body)
	if err != nil {
		return Connack{}, err
	}
	if ca.Code != 0 {
		return ca, &ConnackError{Version: c.v, Code: ca.Code, Reason: ca.ReasonString}
	}
	return ca, nil
}

// Subscribe subscribes to one filter and waits for its SUBACK, returning the
// granted QoS; a failure code is a *SubackError.
func (c *Client) Subscribe(filter string, qos byte) (byte, error) {
	id := c.NextID()
	c.out = AppendSubscribe(c.out[:0], c.v, id, filter, qos)
	if err := c.flush(); err != nil {
		return 0, err
	}
	for {
		p, err := c.Read()
		if err != nil {
			return 0, err
		}
		if p.Type != TypeSuback {
			if err := c.other(p); err != nil {
				return 0, err
			}
			continue
		}
		s, err := ParseSuback(c.v, p.Body)
		if err != nil {
			return 0, err
		}
		if s.PacketID != id {
			return 0, fmt.Errorf("%w: SUBACK for packet %d, want %d", ErrMalformed, s.PacketID, id)
		}
		if s.Codes[0] >= 0x80 {
			return 0, &SubackError{Code: s.Codes[0]}
		}
		return s.Codes[0], nil
	}
}

// Publish writes a PUBLISH and returns its packet ID (0 at QoS 0) without
// waiting for the acknowledgement.
func (c *Client) Publish(topic string, qos byte, payload []byte) (uint16, error) {
	var id uint16
	if qos > 0 {
		id = c.NextID()
	}
	c.out = AppendPublish(c.out[:0], c.v, id, topic, qos, payload)
	return id, c.flush()
}

// Ack acknowledges a QoS 1 PUBLISH from the server.
func (c *Client) Ack(packetID uint16) error {
	c.out = AppendPuback(c.out[:0], packetID)
	return c.flush()
}

// Read reads the next packet. A server DISCONNECT is returned as a
// *DisconnectError. The body is valid until the next Read.
func (c *Client) Read() (Packet, error) {
	p, buf, err := ReadPacket(c.r, c.buf, c.maxSize)
	c.buf = buf
	if err != nil {
		return Packet{}, err
	}
	if p.Type == TypeDisconnect {
		code, reason, err := ParseDisconnect(c.v, p.Body)
		if err != nil {
			return Packet{}, err
		}
		return Packet{}, &DisconnectError{Code: code, Reason: reason}
	}
	return p, nil
}

// other handles a packet that arrived while waiting for something else:
// keepalive answers are ignored, anything else is unexpected.
func (c *Client) other(p Packet) error {
	if p.Type == TypePingresp {
		return nil
	}
	return &UnexpectedError{Type: p.Type}
}

// Disconnect sends DISCONNECT (it does not close the connection).
func (c *Client) Disconnect() error {
	c.out = AppendDisconnect(c.out[:0])
	return c.flush()
}
