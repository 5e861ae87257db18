package mqttraw

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"strings"
	"testing"

	"github.com/mochi-mqtt/server/v2/packets"
)

func TestEncodeGolden(t *testing.T) {
	tests := []struct {
		name string
		got  []byte
		want []byte
	}{
		{
			"connect 3.1.1",
			AppendConnect(nil, V311, Connect{ClientID: "d1", Username: "u", KeepAlive: 60, CleanStart: true}),
			[]byte{0x10, 17, 0, 4, 'M', 'Q', 'T', 'T', 4, 0x82, 0, 60, 0, 2, 'd', '1', 0, 1, 'u'},
		},
		{
			"connect 5 with password",
			AppendConnect(nil, V5, Connect{ClientID: "d", Password: []byte("p"), KeepAlive: 1}),
			[]byte{0x10, 17, 0, 4, 'M', 'Q', 'T', 'T', 5, 0x40, 0, 1, 0, 0, 1, 'd', 0, 1, 'p'},
		},
		{
			"subscribe 5",
			AppendSubscribe(nil, V5, 7, "a/#", 1),
			[]byte{0x82, 9, 0, 7, 0, 0, 3, 'a', '/', '#', 1},
		},
		{
			"subscribe 3.1.1",
			AppendSubscribe(nil, V311, 1, "x", 1),
			[]byte{0x82, 6, 0, 1, 0, 1, 'x', 1},
		},
		{
			"publish qos1 3.1.1",
			AppendPublish(nil, V311, 0x0102, "t", 1, []byte("hi")),
			[]byte{0x32, 7, 0, 1, 't', 1, 2, 'h', 'i'},
		},
		{
			"publish qos0 5",
			AppendPublish(nil, V5, 9, "t", 0, nil),
			[]byte{0x30, 4, 0, 1, 't', 0},
		},
		{"puback", AppendPuback(nil, 0xABCD), []byte{0x40, 2, 0xAB, 0xCD}},
		{"disconnect", AppendDisconnect(nil), []byte{0xE0, 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !bytes.Equal(tt.got, tt.want) {
				t.Fatalf("got  % x\nwant % x", tt.got, tt.want)
			}
		})
	}
}

func TestVarint(t *testing.T) {
	for _, n := range []int{0, 1, 127, 128, 16383, 16384, 2097151, 2097152, maxRemaining} {
		b := appendVarint(nil, n)
		got, rest, err := readVarint(b)
		if err != nil || got != n || len(rest) != 0 {
			t.Errorf("varint %d: % x -> %d %v", n, b, got, err)
		}
	}
}

// TestMochiDecodesOurs checks our encoding against an independent
// decoder: the broker's own.
func TestMochiDecodesOurs(t *testing.T) {
	long := strings.Repeat("x", 300) // remaining length over 127: two-byte varint
	for _, v := range []byte{V311, V5} {
		raw := AppendConnect(nil, v, Connect{ClientID: "dev-1", Username: "scope/registrations/dev-1/api-version=1", KeepAlive: 30, CleanStart: true})
		pk := mochiDecode(t, v, raw)
		if pk.Connect.ClientIdentifier != "dev-1" || string(pk.Connect.Username) != "scope/registrations/dev-1/api-version=1" ||
			!pk.Connect.Clean || pk.Connect.Keepalive != 30 || pk.Connect.PasswordFlag || pk.ProtocolVersion != v {
			t.Errorf("v%d CONNECT decoded as %+v", v, pk.Connect)
		}

		raw = AppendSubscribe(nil, v, 42, "$dps/registrations/res/#", 1)
		pk = mochiDecode(t, v, raw)
		if pk.PacketID != 42 || len(pk.Filters) != 1 || pk.Filters[0].Filter != "$dps/registrations/res/#" || pk.Filters[0].Qos != 1 {
			t.Errorf("v%d SUBSCRIBE decoded as %+v", v, pk)
		}

		raw = AppendPublish(nil, v, 3, "$dps/registrations/PUT/iotdps-register/?$rid=1", 1, []byte(long))
		pk = mochiDecode(t, v, raw)
		if pk.PacketID != 3 || pk.FixedHeader.Qos != 1 || pk.TopicName != "$dps/registrations/PUT/iotdps-register/?$rid=1" || string(pk.Payload) != long {
			t.Errorf("v%d PUBLISH decoded as %+v", v, pk)
		}

		pk = mochiDecode(t, v, AppendPuback(nil, 9))
		if pk.PacketID != 9 {
			t.Errorf("v%d PUBACK decoded as %+v", v, pk)
		}
		pk = mochiDecode(t, v, AppendDisconnect(nil))
		if pk.ReasonCode != 0 {
			t.Errorf("v%d DISCONNECT decoded as %+v", v, pk)
		}
	}
}

// TestWeDecodeMochi checks our decoders on what the broker encodes,
// including MQTT 5 properties.
func TestWeDecodeMochi(t *testing.T) {
	for _, v := range []byte{V311, V5} {
		ca := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connack}, ProtocolVersion: v, ReasonCode: 0x87}
		if v == V5 {
			ca.Properties.ReasonString = "401002 enrollment group disabled"
			ca.Properties.ServerKeepAlive = 30
			ca.Properties.ServerKeepAliveFlag = true
			ca.Properties.MaximumPacketSize = 1 << 17
		} else {
			ca.ReasonCode = 5
		}
		p := readBack(t, mochiEncode(t, &ca))
		c, err := ParseConnack(v, p.Body)
		if err != nil {
			t.Fatalf("v%d CONNACK: %v", v, err)
		}
		if v == V5 && (c.Code != 0x87 || c.ReasonString != "401002 enrollment group disabled") {
			t.Errorf("v5 CONNACK %+v", c)
		}
		if v == V311 && c.Code != 5 {
			t.Errorf("v3 CONNACK %+v", c)
		}

		sa := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Suback}, ProtocolVersion: v, PacketID: 5, ReasonCodes: []byte{1}}
		p = readBack(t, mochiEncode(t, &sa))
		s, err := ParseSuback(v, p.Body)
		if err != nil || s.PacketID != 5 || !bytes.Equal(s.Codes, []byte{1}) {
			t.Errorf("v%d SUBACK %+v %v", v, s, err)
		}

		pub := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, ProtocolVersion: v, PacketID: 77,
			TopicName: "$dps/registrations/res/202/?$rid=1&retry-after=3", Payload: []byte(`{"status":"assigning"}`)}
		if v == V5 {
			pub.Properties.ContentType = "application/json"
			pub.Properties.User = []packets.UserProperty{{Key: "k", Val: "v"}}
		}
		p = readBack(t, mochiEncode(t, &pub))
		got, err := ParsePublish(v, p.Flags, p.Body)
		if err != nil || got.PacketID != 77 || got.QoS != 1 || got.Topic != pub.TopicName || string(got.Payload) != `{"status":"assigning"}` {
			t.Errorf("v%d PUBLISH %+v %v", v, got, err)
		}

		pa := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, ProtocolVersion: v, PacketID: 3}
		if v == V5 {
			pa.ReasonCode = 0x87
			pa.Properties.ReasonString = "no"
		}
		p = readBack(t, mochiEncode(t, &pa))
		ack, err := ParsePuback(v, p.Body)
		if err != nil || ack.PacketID != 3 || (v == V5 && ack.Code != 0x87) {
			t.Errorf("v%d PUBACK %+v %v", v, ack, err)
		}
	}
}

func TestMalformed(t *testing.T) {
	tests := []struct {
		name  string
		parse func() error
	}{
		{"connack short", func() error { _, err := ParseConnack(V311, []byte{0}); return err }},
		{"connack props overrun", func() error { _, err := ParseConnack(V5, []byte{0, 0, 5, 0x1F}); return err }},
		{"connack unknown prop", func() error { _, err := ParseConnack(V5, []byte{0, 0, 2, 0x7F, 0}); return err }},
		{"connack truncated string prop", func() error { _, err := ParseConnack(V5, []byte{0, 0, 3, 0x1F, 0, 9}); return err }},
		{"connack truncated int prop", func() error { _, err := ParseConnack(V5, []byte{0, 0, 2, 0x27, 0}); return err }},
		{"suback short", func() error { _, err := ParseSuback(V311, []byte{0, 1}); return err }},
		{"suback v5 no codes", func() error { _, err := ParseSuback(V5, []byte{0, 1, 0}); return err }},
		{"publish qos3", func() error { _, err := ParsePublish(V311, 0x06, []byte{0, 1, 't'}); return err }},
		{"publish topic overrun", func() error { _, err := ParsePublish(V311, 0, []byte{0, 9, 't'}); return err }},
		{"publish no packet id", func() error { _, err := ParsePublish(V311, 0x02, []byte{0, 1, 't', 0}); return err }},
		{"publish v5 bad varint", func() error { _, err := ParsePublish(V5, 0, []byte{0, 1, 't', 0xFF, 0xFF, 0xFF, 0xFF}); return err }},
		{"puback short", func() error { _, err := ParsePuback(V5, []byte{1}); return err }},
		{"puback v5 props overrun", func() error { _, err := ParsePuback(V5, []byte{0, 1, 0x87, 4}); return err }},
		{"disconnect props overrun", func() error { _, _, err := ParseDisconnect(V5, []byte{0x98, 9}); return err }},
		{"read varint too long", func() error {
			_, _, err := ReadPacket(bufio.NewReader(bytes.NewReader([]byte{0x30, 0xFF, 0xFF, 0xFF, 0xFF, 1})), nil, DefaultMaxPacket)
			return err
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.parse(); !errors.Is(err, ErrMalformed) {
				t.Fatalf("err = %v, want ErrMalformed", err)
			}
		})
	}
}

func TestReadPacketLimits(t *testing.T) {
	big := AppendPublish(nil, V311, 0, "t", 0, make([]byte, 1000))
	_, _, err := ReadPacket(bufio.NewReader(bytes.NewReader(big)), nil, 100)
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("over limit: %v", err)
	}
	_, _, err = ReadPacket(bufio.NewReader(bytes.NewReader(big[:10])), nil, DefaultMaxPacket)
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("truncated: %v", err)
	}
	_, _, err = ReadPacket(bufio.NewReader(bytes.NewReader(nil)), nil, DefaultMaxPacket)
	if !errors.Is(err, io.EOF) {
		t.Fatalf("empty: %v", err)
	}
}

// TestClientExchange drives Client against a scripted server over a pipe.
func TestClientExchange(t *testing.T) {
	tests := []struct {
		name   string
		server func(r *bufio.Reader, w net.Conn) // reads the client's packets, writes answers
		client func(c *Client) error
		check  func(t *testing.T, err error)
	}{
		{
			name: "refused v5 connect",
			server: func(r *bufio.Reader, w net.Conn) {
				_, _, _ = ReadPacket(r, nil, DefaultMaxPacket)
				ca := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connack}, ProtocolVersion: 5, ReasonCode: 0x87}
				ca.Properties.ReasonString = "401002 enrollment group disabled"
				_, _ = w.Write(mochiEncode(t, &ca))
			},
			client: func(c *Client) error { _, err := c.Connect(Connect{ClientID: "d"}); return err },
			check: func(t *testing.T, err error) {
				var ce *ConnackError
				if !errors.As(err, &ce) || ce.Code != 0x87 || ce.Reason != "401002 enrollment group disabled" {
					t.Fatalf("err = %v", err)
				}
			},
		},
		{
			name: "suback for another packet",
			server: func(r *bufio.Reader, w net.Conn) {
				_, _, _ = ReadPacket(r, nil, DefaultMaxPacket)
				_, _ = w.Write([]byte{0x90, 4, 0, 99, 0, 1})
			},
			client: func(c *Client) error { _, err := c.Subscribe("f", 1); return err },
			check: func(t *testing.T, err error) {
				if !errors.Is(err, ErrMalformed) {
					t.Fatalf("err = %v", err)
				}
			},
		},
		{
			name: "refused subscription",
			server: func(r *bufio.Reader, w net.Conn) {
				_, _, _ = ReadPacket(r, nil, DefaultMaxPacket)
				_, _ = w.Write([]byte{0x90, 4, 0, 1, 0, 0x87})
			},
			client: func(c *Client) error { _, err := c.Subscribe("f", 1); return err },
			check: func(t *testing.T, err error) {
				var se *SubackError
				if !errors.As(err, &se) || se.Code != 0x87 {
					t.Fatalf("err = %v", err)
				}
			},
		},
		{
			name: "server disconnect while reading",
			server: func(r *bufio.Reader, w net.Conn) {
				_, _, _ = ReadPacket(r, nil, DefaultMaxPacket)
				_, _ = w.Write([]byte{0xE0, 1, 0x98})
			},
			client: func(c *Client) error { _, err := c.Subscribe("f", 1); return err },
			check: func(t *testing.T, err error) {
				var de *DisconnectError
				if !errors.As(err, &de) || de.Code != 0x98 {
					t.Fatalf("err = %v", err)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cc, sc := net.Pipe()
			defer func() { _ = cc.Close() }()
			done := make(chan struct{})
			go func() {
				defer close(done)
				defer func() { _ = sc.Close() }()
				tt.server(bufio.NewReader(sc), sc)
			}()
			err := tt.client(NewClient(cc, V5))
			<-done
			tt.check(t, err)
		})
	}
}

func FuzzParse(f *testing.F) {
	f.Add(byte(0x02), []byte{0, 1, 't', 0, 1, 0})
	f.Add(byte(0x00), []byte{0, 0, 3, 0x1F, 0, 0})
	f.Fuzz(func(t *testing.T, flags byte, body []byte) {
		for _, v := range []byte{V311, V5} {
			_, _ = ParseConnack(v, body)
			_, _ = ParseSuback(v, body)
			_, _ = ParsePublish(v, flags&0x0f, body)
			_, _ = ParsePuback(v, body)
			_, _, _ = ParseDisconnect(v, body)
		}
		_, _, _ = ReadPacket(bufio.NewReader(bytes.NewReader(body)), nil, 1024)
	})
}

func mochiDecode(t *testing.T, v byte, raw []byte) packets.Packet {
	t.Helper()
	p := readBack(t, raw)
	pk := packets.Packet{ProtocolVersion: v}
	if err := pk.FixedHeader.Decode(raw[0]); err != nil {
		t.Fatalf("fixed header: %v", err)
	}
	var err error
	switch p.Type {
	case TypeConnect:
		err = pk.ConnectDecode(p.Body)
	case TypeSubscribe:
		err = pk.SubscribeDecode(p.Body)
	case TypePublish:
		err = pk.PublishDecode(p.Body)
	case TypePuback:
		err = pk.PubackDecode(p.Body)
	case TypeDisconnect:
		err = pk.DisconnectDecode(p.Body)
	default:
		t.Fatalf("type %d", p.Type)
	}
	if err != nil {
		t.Fatalf("mochi decode of % x: %v", raw, err)
	}
	return pk
}

func mochiEncode(t *testing.T, pk *packets.Packet) []byte {
	t.Helper()
	var buf bytes.Buffer
	var err error
	switch pk.FixedHeader.Type {
	case packets.Connack:
		err = pk.ConnackEncode(&buf)
	case packets.Suback:
		err = pk.SubackEncode(&buf)
	case packets.Publish:
		err = pk.PublishEncode(&buf)
	case packets.Puback:
		err = pk.PubackEncode(&buf)
	}
	if err != nil {
		t.Fatalf("mochi encode: %v", err)
	}
	return buf.Bytes()
}

func readBack(t *testing.T, raw []byte) Packet {
	t.Helper()
	r := bufio.NewReader(bytes.NewReader(raw))
	p, _, err := ReadPacket(r, nil, DefaultMaxPacket)
	if err != nil {
		t.Fatalf("ReadPacket(% x): %v", raw, err)
	}
	if r.Buffered() != 0 {
		t.Fatalf("%d bytes left after the packet", r.Buffered())
	}
	return p
}
