package broker_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	pahov3 "github.com/eclipse/paho.mqtt.golang"

	"github.com/dpsbroker/dpsbroker/broker/brokertest"
	"github.com/dpsbroker/dpsbroker/provisioning/pkitest"
	"github.com/dpsbroker/dpsbroker/provisioning/wire"
)

// provisionV3 runs the device flow with the MQTT 3.1.1 client the Azure
// SDKs resemble most (paho.mqtt.golang, QoS 1, clean session). It returns
// the final status, or the CONNACK return code of a refusal.
func provisionV3(t *testing.T, b *brokertest.Broker, url string, dev *pkitest.Leaf) (wire.Status, byte, error) {
	t.Helper()
	regID := dev.Cert.Subject.CommonName
	responses := make(chan pahov3.Message, 4)
	opts := pahov3.NewClientOptions().
		AddBroker(url).
		SetTLSConfig(b.TLSConfigFor(dev)).
		SetProtocolVersion(4).
		SetClientID(regID).
		SetUsername(b.Username(regID)).
		SetCleanSession(true).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetKeepAlive(30 * time.Second)
	c := pahov3.NewClient(opts)
	tok := c.Connect()
	if !tok.WaitTimeout(10 * time.Second) {
		return "", 0, errors.New("connect timed out")
	}
	if err := tok.Error(); err != nil {
		return "", tok.(*pahov3.ConnectToken).ReturnCode(), err
	}
	defer c.Disconnect(100)
	sub := c.Subscribe(wire.ResponseFilter, 1, func(_ pahov3.Client, m pahov3.Message) { responses <- m })
	if !sub.WaitTimeout(10*time.Second) || sub.Error() != nil {
		return "", 0, fmt.Errorf("subscribe: %v", sub.Error())
	}
	request := func(topic string, body []byte) (int, []byte, error) {
		if p := c.Publish(topic, 1, false, body); !p.WaitTimeout(10*time.Second) || p.Error() != nil {
			return 0, nil, fmt.Errorf("publish: %v", p.Error())
		}
		select {
		case m := <-responses:
			st, _, _, err := wire.ParseResponseTopic(m.Topic())
			return st, m.Payload(), err
		case <-time.After(10 * time.Second):
			return 0, nil, errors.New("no response")
		}
	}
	body, _ := json.Marshal(map[string]string{"registrationId": regID})
	st, resp, err := request(string(wire.AppendRegisterTopic(nil, "1")), body)
	for rid := 2; err == nil; rid++ {
		if st != 200 && st != 202 {
			return "", 0, fmt.Errorf("status %d: %s", st, resp)
		}
		op, derr := wire.DecodeOperationStatus(resp)
		if derr != nil {
			return "", 0, derr
		}
		if st == 200 {
			return op.Status, 0, nil
		}
		st, resp, err = request(string(wire.AppendPollTopic(nil, fmt.Sprint(rid), op.OperationID)), []byte(" "))
	}
	return "", 0, err
}

// provisionV5 runs the device flow with paho.golang (MQTT 5) over TLS or
// secure WebSocket.
func provisionV5(t *testing.T, b *brokertest.Broker, ws bool, dev *pkitest.Leaf) (*wire.RegistrationOperationStatus, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if !ws {
		return b.Provision(ctx, dev)
	}
	conn, err := b.DialWebSocket(ctx, dev)
	if err != nil {
		return nil, err
	}
	s, err := b.ConnectConn(ctx, conn, dev.Cert.Subject.CommonName)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	return s.Register(ctx)
}

// TestTransports provisions with an MQTT 3.1.1 and an MQTT 5 client, over
// TLS and over secure WebSocket, and checks that an unenrolled device is
// refused on each: the client certificate reaches the decision on every
// transport.
func TestTransports(t *testing.T) {
	b := brokertest.New(t)
	factory := b.EnrollGroup(t, "factory")
	stranger := pkitest.NewRoot(t).Intermediate(t, "not enrolled")
	for _, tc := range []struct {
		name string
		v3   bool
		ws   bool
	}{
		{"v3.1.1/tls", true, false},
		{"v3.1.1/wss", true, true},
		{"v5/tls", false, false},
		{"v5/wss", false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := strings.NewReplacer("/", "-", ".", "-").Replace(tc.name)
			dev := b.MintDevice(t, factory, "ok-"+id)
			bad := b.MintDevice(t, stranger, "bad-"+id)
			if tc.v3 {
				url := "ssl://" + b.MQTTAddr()
				if tc.ws {
					url = b.WSURL()
				}
				st, _, err := provisionV3(t, b, url, dev)
				if err != nil || st != wire.StatusAssigned {
					t.Fatalf("enrolled device: status %q, err %v", st, err)
				}
				_, code, err := provisionV3(t, b, url, bad)
				if err == nil || code != 5 {
					t.Fatalf("unenrolled device: return code %d, err %v; want 5 (not authorized)", code, err)
				}
				return
			}
			st, err := provisionV5(t, b, tc.ws, dev)
			if err != nil || st.Status != wire.StatusAssigned {
				t.Fatalf("enrolled device: %+v, %v", st, err)
			}
			if got := st.RegistrationState; got == nil || got.AssignedHub != "hub-1.example.net" || got.DeviceID != dev.Cert.Subject.CommonName ||
				got.X509 == nil || got.X509.EnrollmentGroupID != "factory" {
				t.Errorf("registration state %+v", got)
			}
			_, err = provisionV5(t, b, tc.ws, bad)
			var ce *brokertest.ConnectError
			if !errors.As(err, &ce) || ce.ReasonCode != 0x87 || !strings.HasPrefix(ce.Reason, "401") {
				t.Fatalf("unenrolled device: %v; want CONNACK 0x87 with a 401xxx reason", err)
			}
		})
	}
}

// TestWebSocketAnyPath: the SDKs use different paths (or none); every one
// must reach the broker.
func TestWebSocketAnyPath(t *testing.T) {
	b := brokertest.New(t)
	factory := b.EnrollGroup(t, "factory")
	for i, path := range []string{"/$iothub/websocket", "/", "", "/mqtt"} {
		dev := b.MintDevice(t, factory, fmt.Sprintf("path-%d", i))
		url := "wss://" + b.B.WSAddr() + path
		st, _, err := provisionV3(t, b, url, dev)
		if err != nil || st != wire.StatusAssigned {
			t.Errorf("path %q: status %q, err %v", path, st, err)
		}
	}
}

// dialRaw opens a plain TCP connection (no TLS, no CONNECT).
func dialRaw(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// closedWithin reports whether the server closes c within d.
func closedWithin(c net.Conn, d time.Duration) bool {
	_ = c.SetReadDeadline(time.Now().Add(d))
	var buf [1]byte
	_, err := c.Read(buf[:])
	var ne net.Error
	return err != nil && !(errors.As(err, &ne) && ne.Timeout())
}
