// Package mqttraw is a minimal MQTT 3.1.1 / 5 client codec for load
// generation: just the packets a provisioning device sends and receives
// (CONNECT, CONNACK, SUBSCRIBE, SUBACK, PUBLISH, PUBACK, DISCONNECT), with
// no goroutines, no session store and no allocation beyond what decoding
// needs. A full client (paho) costs more CPU per provisioning than the
// broker spends on the MQTT part of it, which would make the load
// generator, not the broker, the thing being measured.
//
// Decoders never panic on bad input: every length is checked and a
// malformed packet yields an error wrapping ErrMalformed.
package mqttraw

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Protocol levels (the CONNECT "protocol level" byte).
const (
	V311 byte = 4
	V5   byte = 5
)

// Control packet types (MQTT 5 §2.1.2; the same numbers in 3.1.1).
const (
	TypeConnect    byte = 1
	TypeConnack    byte = 2
	TypePublish    byte = 3
	TypePuback     byte = 4
	TypeSubscribe  byte = 8
	TypeSuback     byte = 9
	TypePingresp   byte = 13
	TypeDisconnect byte = 14
)

// maxRemaining is the largest remaining length four varint bytes encode.
const maxRemaining = 268435455

// ErrMalformed is wrapped by every decoding error.
var ErrMalformed = errors.New("malformed MQTT packet")

// ErrTooLarge is returned when a packet exceeds the reader's size limit.
var ErrTooLarge = errors.New("MQTT packet too large")

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrMalformed}, args...)...)
}

// Connect is the content of a CONNECT packet.
type Connect struct {
	ClientID   string
	Username   string
	Password   []byte // nil: no password flag
	KeepAlive  uint16 // seconds
	CleanStart bool
}

// AppendConnect appends a CONNECT packet for protocol level v.
func AppendConnect(dst []byte, v byte, c Connect) []byte {
	var flags byte
	if c.CleanStart {
		flags |= 0x02
	}
	n := 2 + 4 + 1 + 1 + 2 // protocol name, level, flags, keepalive
	if v == V5 {
		n++ // empty property length
	}
	n += 2 + len(c.ClientID)
	if c.Username != "" {
		flags |= 0x80
		n += 2 + len(c.Username)
	}
	if c.Password != nil {
		flags |= 0x40
		n += 2 + len(c.Password)
	}
	dst = appendFixed(dst, TypeConnect<<4, n)
	dst = appendString(dst, "MQTT")
	dst = append(dst, v, flags)
	dst = binary.BigEndian.AppendUint16(dst, c.KeepAlive)
	if v == V5 {
		dst = append(dst, 0)
	}
	dst = appendString(dst, c.ClientID)
	if c.Username != "" {
		dst = appendString(dst, c.Username)
	}
	if c.Password != nil {
		dst = appendString(dst, string(c.Password))
	}
	return dst
}

// AppendSubscribe appends a SUBSCRIBE of one filter at qos.
func AppendSubscribe(dst []byte, v byte, packetID uint16, filter string, qos byte) []byte {
	n := 2 + 2 + len(filter) + 1
	if v == V5 {
		n++
	}
	dst = appendFixed(dst, TypeSubscribe<<4|0x02, n)
	dst = binary.BigEndian.AppendUint16(dst, packetID)
	if v == V5 {
		dst = append(dst, 0)
	}
	dst = appendString(dst, filter)
	return append(dst, qos&0x03)
}

// AppendPublish appends a PUBLISH; packetID is ignored at QoS 0.
func AppendPublish(dst []byte, v byte, packetID uint16, topic string, qos byte, payload []byte) []byte {
	n := 2 + len(topic) + len(payload)
	if qos > 0 {
		n += 2
	}
	if v == V5 {
		n++
	}
	dst = appendFixed(dst, TypePublish<<4|(qos&0x03)<<1, n)
	dst = appendString(dst, topic)
	if qos > 0 {
		dst = binary.BigEndian.AppendUint16(dst, packetID)
	}
	if v == V5 {
		dst = append(dst, 0)
	}
	return append(dst, payload...)
}

// AppendPuback appends a PUBACK (success; MQTT 5 allows omitting the reason
// code then, which is also the 3.1.1 form).
func AppendPuback(dst []byte, packetID uint16) []byte {
	dst = append(dst, TypePuback<<4, 2)
	return binary.BigEndian.AppendUint16(dst, packetID)
}

// AppendDisconnect appends a normal DISCONNECT (the same two bytes in both
// versions: MQTT 5 reads an empty body as reason 0x00).
func AppendDisconnect(dst []byte) []byte { return append(dst, TypeDisconnect<<4, 0) }

func appendFixed(dst []byte, first byte, remaining int) []byte {
	dst = append(dst, first)
	return appendVarint(dst, remaining)
}

func appendVarint(dst []byte, n int) []byte {
	for {
		b := byte(n % 128)
		n /= 128
		if n > 0 {
			b |= 0x80
		}
		dst = append(dst, b)
		if n == 0 {
			return dst
		}
	}
}

func appendString(dst []byte, s string) []byte {
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(s)))
	return append(dst, s...)
}

// Packet is one control packet as read: its type, the four flag bits of the
// fixed header, and the body (variable header and payload). Body aliases
// the buffer given to ReadPacket.
type Packet struct {
	Type  byte
	Flags byte
	Body  []byte
}

// ReadPacket reads one packet from r into buf (grown as needed, and
// returned for reuse). Packets larger than maxSize bytes of body fail with
// ErrTooLarge before anything is allocated for them.
func ReadPacket(r *bufio.Reader, buf []byte, maxSize int) (Packet, []byte, error) {
	first, err := r.ReadByte()
	if err != nil {
		return Packet{}, buf, err
	}
	n, mult := 0, 1
	for i := 0; ; i++ {
		if i == 4 {
			return Packet{}, buf, malformed("remaining length longer than 4 bytes")
		}
		b, err := r.ReadByte()
		if err != nil {
			return Packet{}, buf, unexpectedEOF(err)
		}
		n += int(b&0x7f) * mult
		mult *= 128
		if b&0x80 == 0 {
			break
		}
	}
	if n > maxSize {
		return Packet{}, buf, fmt.Errorf("%w: %d bytes (limit %d)", ErrTooLarge, n, maxSize)
	}
	if cap(buf) < n {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	if _, err := io.ReadFull(r, buf); err != nil {
		return Packet{}, buf, unexpectedEOF(err)
	}
	return Packet{Type: first >> 4, Flags: first & 0x0f, Body: buf}, buf, nil
}

func unexpectedEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// Connack is a decoded CONNACK.
type Connack struct {
	SessionPresent bool
	// Code is the 3.1.1 return code or the MQTT 5 reason code (0: accepted).
	Code byte
	// ReasonString is the MQTT 5 reason string property, if any.
	ReasonString string
}

// ParseConnack decodes a CONNACK body.
func ParseConnack(v byte, body []byte) (Connack, error) {
	if len(body) < 2 {
		return Connack{}, malformed("CONNACK of %d bytes", len(body))
	}
	c := Connack{SessionPresent: body[0]&0x01 != 0, Code: body[1]}
	if v != V5 || len(body) == 2 {
		return c, nil
	}
	props, _, err := splitProps(body[2:])
	if err != nil {
		return Connack{}, err
	}
	err = walkProps(props, func(id byte, val []byte) {
		if id == propReasonString {
			c.ReasonString = string(val)
		}
	})
	return c, err
}

// Suback is a decoded SUBACK.
type Suback struct {
	PacketID uint16
	Codes    []byte // granted QoS or failure code per filter
}

// ParseSuback decodes a SUBACK body.
func ParseSuback(v byte, body []byte) (Suback, error) {
	if len(body) < 3 {
		return Suback{}, malformed("SUBACK of %d bytes", len(body))
	}
	s := Suback{PacketID: binary.BigEndian.Uint16(body)}
	rest := body[2:]
	if v == V5 {
		var err error
		if _, rest, err = splitProps(rest); err != nil {
			return Suback{}, err
		}
	}
	if len(rest) == 0 {
		return Suback{}, malformed("SUBACK without reason codes")
	}
	s.Codes = rest
	return s, nil
}

// Publish is a decoded PUBLISH. Topic is a copy; Payload aliases the body.
type Publish struct {
	Topic    string
	QoS      byte
	PacketID uint16
	Payload  []byte
}

// ParsePublish decodes a PUBLISH body with the fixed-header flags.
func ParsePublish(v byte, flags byte, body []byte) (Publish, error) {
	p := Publish{QoS: (flags >> 1) & 0x03}
	if p.QoS == 3 {
		return Publish{}, malformed("PUBLISH with QoS 3")
	}
	topic, rest, err := readString(body)
	if err != nil {
		return Publish{}, err
	}
	p.Topic = string(topic)
	if p.QoS > 0 {
		if len(rest) < 2 {
			return Publish{}, malformed("PUBLISH without packet ID")
		}
		p.PacketID = binary.BigEndian.Uint16(rest)
		rest = rest[2:]
	}
	if v == V5 {
		if _, rest, err = splitProps(rest); err != nil {
			return Publish{}, err
		}
	}
	p.Payload = rest
	return p, nil
}

// Puback is a decoded PUBACK.
type Puback struct {
	PacketID uint16
	Code     byte // MQTT 5 reason code; always 0 in 3.1.1
}

// ParsePuback decodes a PUBACK body.
func ParsePuback(v byte, body []byte) (Puback, error) {
	if len(body) < 2 {
		return Puback{}, malformed("PUBACK of %d bytes", len(body))
	}
	p := Puback{PacketID: binary.BigEndian.Uint16(body)}
	if v == V5 && len(body) > 2 {
		p.Code = body[2]
		if len(body) > 3 {
			if _, _, err := splitProps(body[3:]); err != nil {
				return Puback{}, err
			}
		}
	}
	return p, nil
}

// ParseDisconnect returns the MQTT 5 reason code and reason string of a
// server DISCONNECT (0 and "" for an empty or 3.1.1 one).
func ParseDisconnect(v byte, body []byte) (code byte, reason string, err error) {
	if v != V5 || len(body) == 0 {
		return 0, "", nil
	}
	code = body[0]
	if len(body) == 1 {
		return code, "", nil
	}
	props, _, err := splitProps(body[1:])
	if err != nil {
		return 0, "", err
	}
	err = walkProps(props, func(id byte, val []byte) {
		if id == propReasonString {
			reason = string(val)
		}
	})
	return code, reason, err
}

func readString(b []byte) (s, rest []byte, err error) {
	if len(b) < 2 {
		return nil, nil, malformed("string length missing")
	}
	n := int(binary.BigEndian.Uint16(b))
	if len(b) < 2+n {
		return nil, nil, malformed("string of %d bytes in %d", n, len(b)-2)
	}
	return b[2 : 2+n], b[2+n:], nil
}

func readVarint(b []byte) (n int, rest []byte, err error) {
	mult := 1
	for i := 0; i < 4; i++ {
		if i >= len(b) {
			return 0, nil, malformed("truncated variable byte integer")
		}
		n += int(b[i]&0x7f) * mult
		mult *= 128
		if b[i]&0x80 == 0 {
			return n, b[i+1:], nil
		}
	}
	return 0, nil, malformed("variable byte integer longer than 4 bytes")
}

// splitProps splits an MQTT 5 property block (length + properties) off b.
func splitProps(b []byte) (props, rest []byte, err error) {
	n, b, err := readVarint(b)
	if err != nil {
		return nil, nil, err
	}
	if n > len(b) {
		return nil, nil, malformed("properties of %d bytes in %d", n, len(b))
	}
	return b[:n], b[n:], nil
}

const propReasonString = 0x1F

// walkProps calls fn for each property of an MQTT 5 property block, with
// its raw value (for strings and binary data, without the length prefix).
func walkProps(b []byte, fn func(id byte, val []byte)) error {
	for len(b) > 0 {
		id := b[0]
		b = b[1:]
		var val []byte
		switch id {
		case 0x01, 0x17, 0x19, 0x24, 0x25, 0x28, 0x29, 0x2A: // byte
			if len(b) < 1 {
				return malformed("property 0x%02x truncated", id)
			}
			val, b = b[:1], b[1:]
		case 0x13, 0x21, 0x22, 0x23: // two-byte integer
			if len(b) < 2 {
				return malformed("property 0x%02x truncated", id)
			}
			val, b = b[:2], b[2:]
		case 0x02, 0x11, 0x18, 0x27: // four-byte integer
			if len(b) < 4 {
				return malformed("property 0x%02x truncated", id)
			}
			val, b = b[:4], b[4:]
		case 0x0B: // variable byte integer
			start := b
			var err error
			if _, b, err = readVarint(b); err != nil {
				return err
			}
			val = start[:len(start)-len(b)]
		case 0x03, 0x08, 0x09, 0x12, 0x15, 0x16, 0x1A, 0x1C, 0x1F: // string or binary
			var err error
			if val, b, err = readString(b); err != nil {
				return err
			}
		case 0x26: // user property: string pair
			var err error
			if _, b, err = readString(b); err != nil {
				return err
			}
			if val, b, err = readString(b); err != nil {
				return err
			}
		default:
			return malformed("unknown property 0x%02x", id)
		}
		fn(id, val)
	}
	return nil
}
