package hooks_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pahopkt "github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
	pahov3 "github.com/eclipse/paho.mqtt.golang"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"

	"github.com/dpsbroker/dpsbroker/hooks"
	"github.com/dpsbroker/dpsbroker/provisioning"
	"github.com/dpsbroker/dpsbroker/provisioning/pkitest"
	"github.com/dpsbroker/dpsbroker/provisioning/store/bolt"
	"github.com/dpsbroker/dpsbroker/provisioning/tpmattest/tpmdecide"
	"github.com/dpsbroker/dpsbroker/provisioning/wire"
	"github.com/dpsbroker/dpsbroker/provisioning/x509attest"
)

const (
	testScope   = "0ne00TEST01"
	testToken   = "s3rvice-t0ken"
	waitTimeout = 5 * time.Second
	// quiet is how long a test waits to be sure that nothing arrives.
	quiet = 200 * time.Millisecond
)

var testHubs = []string{"hub-1.example.net", "hub-2.example.net", "hub-3.example.net"}

// env is one broker: real mochi with a real TLS listener on 127.0.0.1,
// the DPS hook, the x509attest evaluator and the Service on a bolt store.
type env struct {
	t        testing.TB
	srv      *mqtt.Server
	dps      *hooks.DPS
	addr     string
	store    provisioning.Store
	decider  *switchDecider
	serverCA *pkitest.CA
	svcCA    *pkitest.CA
	root     *pkitest.CA
	interA   *pkitest.CA
	interB   *pkitest.CA
}

// switchDecider passes decisions to the real evaluator, or fails like an
// unreachable store when down is set.
type switchDecider struct {
	real *x509attest.Evaluator
	down atomic.Bool
}

func (d *switchDecider) Decide(ctx context.Context, chain []*x509.Certificate) (*x509attest.Decision, error) {
	if d.down.Load() {
		return nil, fmt.Errorf("enrollments: %w", provisioning.ErrStoreUnavailable)
	}
	return d.real.Decide(ctx, chain)
}

func newEnv(t testing.TB, mod ...func(*hooks.Options)) *env {
	t.Helper()
	st, err := bolt.Open(filepath.Join(t.TempDir(), "dps.db"), bolt.Options{})
	if err != nil {
		t.Fatalf("bolt.Open: %v", err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return newEnvStore(t, st, mod...)
}

// newEnvStore is newEnv on the caller's store (which it does not close).
// TPM attestation is wired with the store as ChallengeStore.
func newEnvStore(t testing.TB, st provisioning.Store, mod ...func(*hooks.Options)) *env {
	t.Helper()
	e := &env{t: t}
	e.serverCA = pkitest.NewRoot(t, pkitest.Key(pkitest.ECDSAP256))
	e.svcCA = pkitest.NewRoot(t, pkitest.Key(pkitest.ECDSAP256))
	e.root = pkitest.NewRoot(t, pkitest.Key(pkitest.ECDSAP256))
	e.interA = e.root.Intermediate(t, "Intermediate A", pkitest.Key(pkitest.ECDSAP256))
	e.interB = e.root.Intermediate(t, "Intermediate B", pkitest.Key(pkitest.ECDSAP256))

	e.store = st

	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		logger = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	e.srv = mqtt.New(&mqtt.Options{InlineClient: true, Logger: logger})

	hubs := make([]provisioning.Hub, len(testHubs))
	for i, h := range testHubs {
		hubs[i] = provisioning.Hub{HostName: h}
	}
	alloc, err := provisioning.NewAllocator(hubs)
	if err != nil {
		t.Fatal(err)
	}
	svc, err := provisioning.NewService(provisioning.ServiceOptions{
		Registrations: st, Operations: st, Events: st, Allocator: alloc,
		Node: "test-node", Logger: logger,
		Publish: func(ev *provisioning.Event) { _ = hooks.PublishEvent(e.srv, ev) },
	})
	if err != nil {
		t.Fatal(err)
	}
	e.decider = &switchDecider{real: x509attest.New(st, x509attest.Options{Logger: logger})}
	attester, err := tpmdecide.New(st, tpmdecide.Options{Challenges: st, Groups: e.decider.real})
	if err != nil {
		t.Fatal(err)
	}
	opts := hooks.Options{
		IDScope:      testScope,
		Decider:      e.decider,
		Registrar:    svc,
		TPM:          attester,
		ServiceCAs:   e.svcCA.Pool(),
		ServiceToken: testToken,
		Logger:       logger,
	}
	for _, m := range mod {
		m(&opts)
	}
	e.dps, err = hooks.New(e.srv, opts)
	if err != nil {
		t.Fatalf("hooks.New: %v", err)
	}
	if err := e.srv.AddHook(e.dps, nil); err != nil {
		t.Fatal(err)
	}
	server := e.serverCA.Server(t)
	l := listeners.NewTCP(listeners.Config{ID: "mtls", Address: "127.0.0.1:0", TLSConfig: &tls.Config{
		Certificates: []tls.Certificate{server.TLSCertificate()},
		ClientAuth:   tls.RequestClientCert, // verified by the hook, so that refusals get a CONNACK
		MinVersion:   tls.VersionTLS12,
	}})
	if err := e.srv.AddListener(l); err != nil {
		t.Fatal(err)
	}
	if err := e.srv.Serve(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.srv.Close() })
	e.addr = l.Address()
	return e
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// putGroup enrolls a group whose signing certificate is ca's.
func (e *env) putGroup(id string, ca *pkitest.CA, status provisioning.ProvisioningStatus) {
	e.t.Helper()
	g := &provisioning.EnrollmentGroup{
		EnrollmentGroupID: id,
		Attestation: provisioning.AttestationMechanism{
			Type: provisioning.AttestationX509,
			X509: &provisioning.X509Attestation{SigningCertificates: &provisioning.X509Certificates{
				Primary: &provisioning.X509CertificateWithInfo{Certificate: string(ca.CertPEM())},
			}},
		},
		EnrollmentPolicy: provisioning.EnrollmentPolicy{ProvisioningStatus: status},
	}
	if _, err := e.store.PutEnrollmentGroup(context.Background(), g, ""); err != nil {
		e.t.Fatalf("PutEnrollmentGroup %s: %v", id, err)
	}
}

// putEnrollment enrolls one device by its certificate.
func (e *env) putEnrollment(leaf *pkitest.Leaf, status provisioning.ProvisioningStatus) {
	e.t.Helper()
	en := &provisioning.IndividualEnrollment{
		RegistrationID: leaf.Cert.Subject.CommonName,
		Attestation: provisioning.AttestationMechanism{
			Type: provisioning.AttestationX509,
			X509: &provisioning.X509Attestation{ClientCertificates: &provisioning.X509Certificates{
				Primary: &provisioning.X509CertificateWithInfo{Certificate: string(leaf.CertPEM())},
			}},
		},
		EnrollmentPolicy: provisioning.EnrollmentPolicy{ProvisioningStatus: status},
	}
	if _, err := e.store.PutEnrollment(context.Background(), en, ""); err != nil {
		e.t.Fatalf("PutEnrollment: %v", err)
	}
}

func (e *env) tlsConfig(leaf *pkitest.Leaf) *tls.Config {
	cfg := &tls.Config{RootCAs: e.serverCA.Pool(), ServerName: "localhost", MinVersion: tls.VersionTLS12}
	if leaf != nil {
		cfg.Certificates = []tls.Certificate{leaf.TLSCertificate()}
	}
	return cfg
}

func username(regID string) string {
	return wire.FormatUsername(testScope, regID, "", "azure-iot-provisioning-device/1.8.0")
}

// msg is one PUBLISH a test client received.
type msg struct {
	topic string
	body  []byte
	qos   byte
}

// response is a parsed DPS response.
type response struct {
	status     int
	rid        string
	retryAfter time.Duration
	body       []byte
	topic      string
}

func parseResponse(t testing.TB, m msg) response {
	t.Helper()
	status, rid, ra, err := wire.ParseResponseTopic(m.topic)
	if err != nil {
		t.Fatalf("response topic %q: %v", m.topic, err)
	}
	if !json.Valid(m.body) {
		t.Fatalf("response body is not JSON: %q", m.body)
	}
	return response{status: status, rid: rid, retryAfter: ra, body: m.body, topic: m.topic}
}

func (r response) operation(t testing.TB) *wire.RegistrationOperationStatus {
	t.Helper()
	s, err := wire.DecodeOperationStatus(r.body)
	if err != nil {
		t.Fatalf("status %d body %s: %v", r.status, r.body, err)
	}
	return s
}

func (r response) errorDetails(t testing.TB) *wire.ErrorDetails {
	t.Helper()
	d, err := wire.DecodeErrorDetails(r.body)
	if err != nil {
		t.Fatalf("status %d body %s: %v", r.status, r.body, err)
	}
	if d.TrackingID == "" || d.Message == "" || d.TimestampUTC.IsZero() {
		t.Fatalf("incomplete error body %s", r.body)
	}
	return d
}

// device is what the tests need from either MQTT client.
type device interface {
	publish(topic string, qos byte, body []byte) error
	next() (msg, bool)
	close()
}

// --- MQTT 5 device (paho.golang) ---

type v5Device struct {
	t     testing.TB
	c     *paho.Client
	msgs  chan msg
	trace *traceConn
	down  chan *paho.Disconnect
}

// dialV5 connects with paho.golang; leaf nil means no client certificate.
func (e *env) dialV5(leaf *pkitest.Leaf, clientID, user string, tweak ...func(*paho.Connect)) (*v5Device, *paho.Connack, error) {
	e.t.Helper()
	conn, err := (&tls.Dialer{Config: e.tlsConfig(leaf)}).DialContext(context.Background(), "tcp", e.addr)
	if err != nil {
		return nil, nil, err
	}
	d := &v5Device{t: e.t, msgs: make(chan msg, 64), trace: &traceConn{Conn: conn}, down: make(chan *paho.Disconnect, 1)}
	d.c = paho.NewClient(paho.ClientConfig{
		Conn: pahopkt.NewThreadSafeConn(d.trace),
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			d.msgs <- msg{topic: pr.Packet.Topic, body: pr.Packet.Payload, qos: pr.Packet.QoS}
			return true, nil
		}},
		OnServerDisconnect: func(dc *paho.Disconnect) {
			select {
			case d.down <- dc:
			default:
			}
		},
		OnClientError: func(error) {},
	})
	cp := &paho.Connect{ClientID: clientID, KeepAlive: 30, CleanStart: true}
	if user != "" {
		cp.Username, cp.UsernameFlag = user, true
	}
	for _, f := range tweak {
		f(cp)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	ca, err := d.c.Connect(ctx, cp)
	if err != nil {
		_ = conn.Close()
		return nil, ca, err
	}
	e.t.Cleanup(d.close)
	return d, ca, nil
}

// deviceV5 connects a provisioning device and subscribes to the responses.
func (e *env) deviceV5(leaf *pkitest.Leaf) *v5Device {
	e.t.Helper()
	id := leaf.Cert.Subject.CommonName
	d, ca, err := e.dialV5(leaf, id, username(id))
	if err != nil {
		e.t.Fatalf("connect %s: %v (connack %+v)", id, err, ca)
	}
	d.subscribe(wire.ResponseFilter, 1)
	return d
}

func (d *v5Device) subscribe(filter string, qos byte) []byte {
	d.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	sa, err := d.c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: qos}}})
	if sa == nil {
		d.t.Fatalf("subscribe %s: %v", filter, err)
	}
	return sa.Reasons
}

func (d *v5Device) publish(topic string, qos byte, body []byte) error {
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	pr, err := d.c.Publish(ctx, &paho.Publish{Topic: topic, QoS: qos, Payload: body})
	if err != nil {
		if pr != nil {
			return fmt.Errorf("puback 0x%02x: %w", pr.ReasonCode, err)
		}
		return err
	}
	return nil
}

func (d *v5Device) next() (msg, bool) {
	select {
	case m := <-d.msgs:
		return m, true
	case <-time.After(waitTimeout):
		return msg{}, false
	}
}

func (d *v5Device) close() {
	_ = d.c.Disconnect(&paho.Disconnect{ReasonCode: 0})
}

// --- MQTT 3.1.1 device (paho.mqtt.golang) ---

type v3Device struct {
	t              testing.TB
	sessionPresent bool
	c              pahov3.Client
	msgs           chan msg
	trace          *traceConn
}

// dialV3 connects with paho.mqtt.golang at protocol level 4 and returns
// the CONNACK return code.
func (e *env) dialV3(leaf *pkitest.Leaf, clientID, user string, clean bool) (*v3Device, byte, error) {
	e.t.Helper()
	return e.dialV3With(leaf, clientID, user, clean, 4)
}

// dialV3Version connects a certificate device at an MQTT protocol level.
func (e *env) dialV3Version(leaf *pkitest.Leaf, level uint) (*v3Device, byte, error) {
	id := leaf.Cert.Subject.CommonName
	return e.dialV3With(leaf, id, username(id), true, level)
}

func (e *env) dialV3With(leaf *pkitest.Leaf, clientID, user string, clean bool, level uint) (*v3Device, byte, error) {
	d := &v3Device{t: e.t, msgs: make(chan msg, 64)}
	cfg := e.tlsConfig(leaf)
	o := pahov3.NewClientOptions().
		AddBroker("ssl://" + e.addr).
		SetClientID(clientID).
		SetUsername(user).
		SetProtocolVersion(level).
		SetCleanSession(clean).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetKeepAlive(30 * time.Second).
		SetConnectTimeout(waitTimeout).
		SetCustomOpenConnectionFn(func(*url.URL, pahov3.ClientOptions) (net.Conn, error) {
			conn, err := (&tls.Dialer{Config: cfg}).DialContext(context.Background(), "tcp", e.addr)
			if err != nil {
				return nil, err
			}
			d.trace = &traceConn{Conn: conn}
			return d.trace, nil
		}).
		SetDefaultPublishHandler(func(_ pahov3.Client, m pahov3.Message) {
			d.msgs <- msg{topic: m.Topic(), body: m.Payload(), qos: m.Qos()}
		})
	d.c = pahov3.NewClient(o)
	tok := d.c.Connect()
	if !tok.WaitTimeout(waitTimeout) {
		return nil, 0, errors.New("connect timed out")
	}
	ct := tok.(*pahov3.ConnectToken)
	rc := ct.ReturnCode()
	if err := tok.Error(); err != nil {
		return nil, rc, err
	}
	d.sessionPresent = ct.SessionPresent()
	e.t.Cleanup(d.close)
	return d, rc, nil
}

func (e *env) deviceV3(leaf *pkitest.Leaf) *v3Device {
	e.t.Helper()
	id := leaf.Cert.Subject.CommonName
	d, rc, err := e.dialV3(leaf, id, username(id), true)
	if err != nil {
		e.t.Fatalf("connect %s (3.1.1): rc %d: %v", id, rc, err)
	}
	if granted := d.subscribe(wire.ResponseFilter, 1); granted != 1 {
		e.t.Fatalf("subscribe granted %d, want 1", granted)
	}
	return d
}

func (d *v3Device) subscribe(filter string, qos byte) byte {
	d.t.Helper()
	tok := d.c.Subscribe(filter, qos, nil)
	if !tok.WaitTimeout(waitTimeout) {
		d.t.Fatalf("subscribe %s timed out", filter)
	}
	st := tok.(*pahov3.SubscribeToken)
	return st.Result()[filter]
}

func (d *v3Device) publish(topic string, qos byte, body []byte) error {
	tok := d.c.Publish(topic, qos, false, body)
	if !tok.WaitTimeout(waitTimeout) {
		return errors.New("publish timed out")
	}
	return tok.Error()
}

func (d *v3Device) next() (msg, bool) {
	select {
	case m := <-d.msgs:
		return m, true
	case <-time.After(waitTimeout):
		return msg{}, false
	}
}

func (d *v3Device) close() { d.c.Disconnect(50) }

// --- DPS flows ---

func registerTopic(rid string) string { return string(wire.AppendRegisterTopic(nil, rid)) }

func pollTopic(rid, op string) string { return string(wire.AppendPollTopic(nil, rid, op)) }

// request publishes and returns the next response, which must carry rid.
func request(t testing.TB, d device, topic string, qos byte, body []byte, rid string) response {
	t.Helper()
	if err := d.publish(topic, qos, body); err != nil {
		t.Fatalf("publish %s: %v", topic, err)
	}
	m, ok := d.next()
	if !ok {
		t.Fatalf("no response to %s", topic)
	}
	r := parseResponse(t, m)
	if r.rid != rid {
		t.Fatalf("response %s to %s: $rid %q, want %q", m.topic, topic, r.rid, rid)
	}
	return r
}

// provision runs the whole DPS flow (register, then poll) and returns the
// final status.
func provision(t testing.TB, d device, regID string, qos byte) *wire.RegistrationOperationStatus {
	t.Helper()
	rid := fmt.Sprintf("r-%d", ridSeq.Add(1))
	r := request(t, d, registerTopic(rid), qos, []byte(`{"registrationId":"`+regID+`"}`), rid)
	if r.status != 202 || r.retryAfter != 3*time.Second {
		t.Fatalf("register: status %d retry-after %v body %s", r.status, r.retryAfter, r.body)
	}
	st := r.operation(t)
	if st.Status != wire.StatusAssigning || st.OperationID == "" {
		t.Fatalf("register: %s", r.body)
	}
	rid2 := fmt.Sprintf("p-%d", ridSeq.Add(1))
	r = request(t, d, pollTopic(rid2, st.OperationID), qos, []byte(" "), rid2)
	if r.status != 200 || r.retryAfter != 0 {
		t.Fatalf("poll: status %d retry-after %v body %s", r.status, r.retryAfter, r.body)
	}
	return r.operation(t)
}

var ridSeq atomic.Int64

// --- packet trace ---

// traceConn records the type of every MQTT packet the client reads, in
// order, straight from the byte stream: what the device really saw.
type traceConn struct {
	net.Conn
	mu      sync.Mutex
	buf     []byte
	packets []tracedPacket
}

type tracedPacket struct {
	typ      byte // MQTT control packet type
	packetID uint16
	topic    string
}

func (c *traceConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.mu.Lock()
		c.buf = append(c.buf, p[:n]...)
		c.parse()
		c.mu.Unlock()
	}
	return n, err
}

func (c *traceConn) parse() {
	for len(c.buf) >= 2 {
		rem, mult, i := 0, 1, 1
		for ; i < len(c.buf) && i <= 4; i++ {
			rem += int(c.buf[i]&0x7f) * mult
			mult *= 128
			if c.buf[i]&0x80 == 0 {
				break
			}
		}
		if i >= len(c.buf) || len(c.buf) < i+1+rem {
			return
		}
		body := c.buf[i+1 : i+1+rem]
		tp := tracedPacket{typ: c.buf[0] >> 4}
		switch tp.typ {
		case 3: // PUBLISH
			if len(body) >= 2 {
				tl := int(body[0])<<8 | int(body[1])
				if len(body) >= 2+tl {
					tp.topic = string(body[2 : 2+tl])
					if (c.buf[0]>>1)&3 > 0 && len(body) >= 4+tl {
						tp.packetID = uint16(body[2+tl])<<8 | uint16(body[3+tl])
					}
				}
			}
		case 4: // PUBACK
			if len(body) >= 2 {
				tp.packetID = uint16(body[0])<<8 | uint16(body[1])
			}
		}
		c.packets = append(c.packets, tp)
		c.buf = c.buf[i+1+rem:]
	}
}

func (c *traceConn) seen() []tracedPacket {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]tracedPacket(nil), c.packets...)
}

// The domain types satisfy the hook's consumer-side interfaces.
var (
	_ hooks.Registrar   = (*provisioning.Service)(nil)
	_ hooks.X509Decider = (*x509attest.Evaluator)(nil)
)
