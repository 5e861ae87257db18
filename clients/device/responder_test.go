package device_test

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/dpsbroker/dpsbroker/clients/device"
	"github.com/dpsbroker/dpsbroker/provisioning/pkitest"
	"github.com/dpsbroker/dpsbroker/provisioning/wire"
)

// The tests of this file's package drive the client's state machine
// against a real mochi broker on 127.0.0.1 with mutual TLS, whose only
// hook is a scripted DPS responder. The real DPS handler (hooks/) is
// exercised end to end in e2e_test.go.

// reply is one response the script sends.
type reply struct {
	status     int
	rid        string // "" echoes the request's $rid
	retryAfter int
	body       string
}

// request is what the responder saw.
type request struct {
	req  wire.Request
	body []byte
}

// script answers the n-th request (from 0) of the run.
type script func(n int, req wire.Request, body []byte) []reply

// responder is a mochi hook that accepts every device, answers requests
// with a script after the PUBACK (as hooks/ does), and records what it saw.
type responder struct {
	mqtt.HookBase
	srv    *mqtt.Server
	script script

	mu           sync.Mutex
	refuse       []packets.Code // CONNACK refusals for the next connects, in order
	connects     int
	clientID     string
	username     string
	peerCN       string
	requests     []request
	unsubscribed bool
	disconnects  int
	seen         chan wire.Request // every request, if not nil (buffered)
}

func (r *responder) ID() string { return "dps-script" }

func (r *responder) Provides(b byte) bool {
	return bytes.Contains([]byte{mqtt.OnConnect, mqtt.OnConnectAuthenticate, mqtt.OnACLCheck,
		mqtt.OnPublish, mqtt.OnPublished, mqtt.OnUnsubscribed, mqtt.OnDisconnect}, []byte{b})
}

func (r *responder) OnConnect(cl *mqtt.Client, pk packets.Packet) error {
	r.mu.Lock()
	r.connects++
	r.clientID, r.username = cl.ID, string(pk.Connect.Username)
	if tc, ok := cl.Net.Conn.(*tls.Conn); ok {
		if peers := tc.ConnectionState().PeerCertificates; len(peers) > 0 {
			r.peerCN = peers[0].Subject.CommonName
		}
	}
	var refuse *packets.Code
	if len(r.refuse) > 0 {
		refuse = &r.refuse[0]
		r.refuse = r.refuse[1:]
	}
	r.mu.Unlock()
	if refuse != nil {
		_ = r.srv.SendConnack(cl, *refuse, false, nil)
		return *refuse
	}
	return nil
}

func (r *responder) OnConnectAuthenticate(*mqtt.Client, packets.Packet) bool { return true }
func (r *responder) OnACLCheck(*mqtt.Client, string, bool) bool              { return true }

func (r *responder) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.Net.Inline {
		return pk, nil
	}
	return pk, packets.CodeSuccessIgnore
}

func (r *responder) OnPublished(cl *mqtt.Client, pk packets.Packet) {
	if cl.Net.Inline {
		return
	}
	req, err := wire.ParseRequestTopic(pk.TopicName)
	if err != nil {
		_ = r.srv.Publish(wire.ResponseTopic(400, "bad", 0), []byte(`{"errorCode":400001,"message":"bad topic"}`), false, 1)
		return
	}
	r.mu.Lock()
	n := len(r.requests)
	r.requests = append(r.requests, request{req: req, body: append([]byte(nil), pk.Payload...)})
	seen := r.seen
	r.mu.Unlock()
	if seen != nil {
		seen <- req
	}
	for _, rep := range r.script(n, req, pk.Payload) {
		rid := rep.rid
		if rid == "" {
			rid = req.RID
		}
		_ = r.srv.Publish(wire.ResponseTopic(rep.status, rid, rep.retryAfter), []byte(rep.body), false, 1)
	}
}

func (r *responder) OnUnsubscribed(*mqtt.Client, packets.Packet) {
	r.mu.Lock()
	r.unsubscribed = true
	r.mu.Unlock()
}

func (r *responder) OnDisconnect(*mqtt.Client, error, bool) {
	r.mu.Lock()
	r.disconnects++
	r.mu.Unlock()
}

// refuseNext makes the next connects fail with these CONNACK codes.
func (r *responder) refuseNext(codes ...packets.Code) {
	r.mu.Lock()
	r.refuse = append(r.refuse, codes...)
	r.mu.Unlock()
}

// watch returns a channel that receives every request from now on.
func (r *responder) watch() <-chan wire.Request {
	ch := make(chan wire.Request, 16)
	r.mu.Lock()
	r.seen = ch
	r.mu.Unlock()
	return ch
}

func (r *responder) snapshot() responder {
	r.mu.Lock()
	defer r.mu.Unlock()
	return responder{connects: r.connects, clientID: r.clientID, username: r.username, peerCN: r.peerCN,
		requests: append([]request(nil), r.requests...), unsubscribed: r.unsubscribed, disconnects: r.disconnects}
}

// testBroker is a mochi broker with the responder, and the PKI for it.
type testBroker struct {
	addr    string
	roots   *x509.CertPool
	devices *pkitest.CA
	r       *responder
}

func newTestBroker(t *testing.T, s script) *testBroker {
	t.Helper()
	serverRoot := pkitest.NewRoot(t)
	server := serverRoot.Server(t)
	srv := mqtt.New(&mqtt.Options{InlineClient: true, Logger: slog.New(slog.DiscardHandler)})
	r := &responder{srv: srv, script: s}
	if err := srv.AddHook(r, nil); err != nil {
		t.Fatal(err)
	}
	l := listeners.NewTCP(listeners.Config{ID: "mtls", Address: "127.0.0.1:0", TLSConfig: &tls.Config{
		Certificates: []tls.Certificate{server.TLSCertificate()},
		ClientAuth:   tls.RequireAnyClientCert,
		MinVersion:   tls.VersionTLS12,
	}})
	if err := srv.AddListener(l); err != nil {
		t.Fatal(err)
	}
	if err := srv.Serve(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	return &testBroker{addr: l.Address(), roots: serverRoot.Pool(), devices: pkitest.NewRoot(t).Intermediate(t, "factory"), r: r}
}

// config is a Config for device cn with test-fast waits.
func (b *testBroker) config(t *testing.T, cn string) device.Config {
	t.Helper()
	tc := b.devices.Leaf(t, cn).TLSCertificate()
	return device.Config{
		Broker:          b.addr,
		IDScope:         "0ne00TEST",
		Certificate:     &tc,
		TLSConfig:       &tls.Config{RootCAs: b.roots},
		PollInterval:    10 * time.Millisecond,
		RetryBackoff:    10 * time.Millisecond,
		MaxRetryBackoff: 50 * time.Millisecond,
		Logger:          testLogger(t),
	}
}

// testLogger writes the client's steps to the test log, so a failure
// shows the whole exchange.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// Bodies used by the scripts.
const (
	assigningBody = `{"operationId":"op-1","status":"assigning"}`
)

func assignedBody(regID string) string {
	return `{"operationId":"op-1","status":"assigned","registrationState":{"registrationId":"` + regID +
		`","assignedHub":"hub-1.example.net","deviceId":"` + regID + `","status":"assigned","substatus":"initialAssignment",` +
		`"createdDateTimeUtc":"2024-01-02T03:04:05.0000000Z","x509":{"enrollmentGroupId":"factory"}}}`
}

func errorBody(code int, msg string) string {
	return `{"errorCode":` + strconv.Itoa(code) + `,"trackingId":"trk-1","message":"` + msg + `","timestampUtc":"2024-01-02T03:04:05Z"}`
}

// freePort returns a loopback address nothing listens on.
func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	return addr
}
