// Package brokertest starts an in-process dpsbroker for integration tests,
// the way net/http/httptest starts an HTTP server: real TLS on 127.0.0.1,
// real mochi, the real provisioning hooks and the embedded store in
// tb.TempDir() (or Redis with WithRedis), with a fresh test PKI.
//
//	b := brokertest.New(t)
//	factory := b.EnrollGroup(t, "factory-a")          // intermediate CA + enabled group
//	dev := b.MintDevice(t, factory, "device-1")       // leaf + chain + key
//	cfg := b.TLSConfigFor(dev)                        // for tls.Dial / paho
//	// connect to b.MQTTAddr() with client ID "device-1" and username b.Username("device-1")
//
// The broker stops when the test ends. Every helper fails the test on
// error, so tests stay short.
package brokertest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/dpsbroker/dpsbroker/broker"
	"github.com/dpsbroker/dpsbroker/clients/service"
	"github.com/dpsbroker/dpsbroker/hooks"
	"github.com/dpsbroker/dpsbroker/provisioning"
	"github.com/dpsbroker/dpsbroker/provisioning/pkitest"
	"github.com/dpsbroker/dpsbroker/provisioning/tpmattest"
	"github.com/dpsbroker/dpsbroker/provisioning/wire"
)

// TB is the part of testing.TB the package uses; *testing.T and
// *testing.B satisfy it.
type TB interface {
	Helper()
	Fatalf(format string, args ...any)
	Logf(format string, args ...any)
	Cleanup(func())
	TempDir() string
}

// IDScope is the ID scope of test brokers unless WithConfig changes it.
const IDScope = "0ne0000TEST"

// Broker is a running test broker with its PKI.
type Broker struct {
	// B is the broker itself, for what the helpers do not cover.
	B *broker.Broker
	// ServerCA signs the broker's server certificate; devices trust it.
	ServerCA *pkitest.CA
	// DeviceRoot is the root of the device PKI; EnrollGroup issues
	// intermediates under it by default.
	DeviceRoot *pkitest.CA

	token    string
	stopOnce sync.Once
	stopErr  error
}

type options struct {
	configure []func(*broker.Config)
	logger    *slog.Logger
}

// Option changes how New starts the broker.
type Option func(*options)

// WithConfig edits the configuration before the broker starts (after the
// test defaults: loopback listeners on free ports, a 2 s connect timeout,
// a 2 s shutdown timeout, the embedded store in a temporary directory).
func WithConfig(f func(*broker.Config)) Option {
	return func(o *options) { o.configure = append(o.configure, f) }
}

// WithRedis uses the Redis store at addr (for example
// redistest.Start(t).Addr()) instead of the embedded one. Brokers that
// share one Redis, one ID scope and one DB share one fleet.
func WithRedis(addr string, db int) Option {
	return WithConfig(func(c *broker.Config) { c.RedisAddr, c.RedisDB = addr, db })
}

// WithLogger sends the broker's logs to l (default: discarded, or the
// test log when DPSBROKER_TEST_LOG is set).
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// New starts a broker and stops it when the test ends.
func New(tb TB, opts ...Option) *Broker {
	tb.Helper()
	o := &options{}
	for _, opt := range opts {
		opt(o)
	}
	dir := tb.TempDir()
	serverCA := pkitest.NewRoot(tb, pkitest.Subject(pkixName("brokertest server root")))
	server := serverCA.Server(tb)
	certFile, keyFile := filepath.Join(dir, "server.pem"), filepath.Join(dir, "server.key")
	writeFile(tb, certFile, server.ChainPEM())
	writeFile(tb, keyFile, server.KeyPEM())

	cfg := broker.DefaultConfig()
	cfg.DataDir = filepath.Join(dir, "data")
	cfg.MQTTAddr = "127.0.0.1:0"
	cfg.WSAddr = "127.0.0.1:0"
	cfg.AdminAddr = "127.0.0.1:0"
	cfg.HTTPAddr = "127.0.0.1:0"
	cfg.IDScope = IDScope
	cfg.TLSCert, cfg.TLSKey = certFile, keyFile
	cfg.AdminToken = "brokertest-admin-token-" + randomSuffix()
	cfg.ConnectTimeout = 2 * time.Second
	cfg.ShutdownTimeout = 2 * time.Second
	cfg.RetryAfter = time.Second
	cfg.Hubs = broker.HubList{{HostName: "hub-1.example.net", Weight: 1}}
	for _, f := range o.configure {
		f(&cfg)
	}
	logger := o.logger
	if logger == nil {
		logger = testLogger(tb)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	bb, err := broker.New(ctx, cfg, logger)
	if err != nil {
		tb.Fatalf("brokertest: %v", err)
	}
	if err := bb.Start(); err != nil {
		tb.Fatalf("brokertest: %v", err)
	}
	b := &Broker{
		B:          bb,
		ServerCA:   serverCA,
		DeviceRoot: pkitest.NewRoot(tb, pkitest.Subject(pkixName("brokertest device root"))),
		token:      cfg.AdminToken,
	}
	tb.Cleanup(func() { _ = b.Stop() })
	return b
}

// Stop shuts the broker down gracefully (idempotent); Cleanup calls it.
func (b *Broker) Stop() error {
	b.stopOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		b.stopErr = b.B.Shutdown(ctx)
	})
	return b.stopErr
}

// MQTTAddr is the MQTT-over-TLS address (host:port).
func (b *Broker) MQTTAddr() string { return b.B.MQTTAddr() }

// WSURL is the MQTT-over-WebSocket URL, with the path the Azure C, Node
// and Python SDKs use (the broker accepts any path).
func (b *Broker) WSURL() string { return "wss://" + b.B.WSAddr() + "/$iothub/websocket" }

// AdminURL is the admin API's base URL.
func (b *Broker) AdminURL() string { return "https://" + b.B.AdminAddr() }

// AdminToken is the admin API's bearer token.
func (b *Broker) AdminToken() string { return b.token }

// HTTPURL is the base URL of /healthz, /readyz and /metrics.
func (b *Broker) HTTPURL() string { return "http://" + b.B.HTTPAddr() }

// IDScope is the broker's ID scope.
func (b *Broker) IDScope() string { return b.B.Config().IDScope }

// Username is the DPS CONNECT username of a device.
func (b *Broker) Username(registrationID string) string {
	return wire.FormatUsername(b.IDScope(), registrationID, "", "brokertest")
}

// RootCAs is the pool devices use to verify the broker.
func (b *Broker) RootCAs() *x509.CertPool { return b.ServerCA.Pool() }

// TLSConfigFor is a client TLS configuration that presents dev's chain and
// trusts the broker; nil dev presents no certificate (TPM, SAS, services).
func (b *Broker) TLSConfigFor(dev *pkitest.Leaf) *tls.Config {
	cfg := &tls.Config{RootCAs: b.RootCAs(), ServerName: "localhost", MinVersion: tls.VersionTLS12}
	if dev != nil {
		cfg.Certificates = []tls.Certificate{dev.TLSCertificate()}
	}
	return cfg
}

// Store is the broker's store. Writes through it reach live sessions as
// admin API writes do.
func (b *Broker) Store() provisioning.Store { return b.B.Store() }

// groupOptions configure EnrollGroup.
type groupOptions struct {
	ca       *pkitest.CA
	parent   *pkitest.CA
	disabled bool
	hubs     []string
}

// GroupOption changes the group EnrollGroup creates.
type GroupOption func(*groupOptions)

// GroupCA enrolls an existing CA (the device root, for instance) instead
// of issuing a new intermediate.
func GroupCA(ca *pkitest.CA) GroupOption { return func(o *groupOptions) { o.ca = ca } }

// GroupParent issues the new intermediate under parent instead of the
// device root.
func GroupParent(parent *pkitest.CA) GroupOption { return func(o *groupOptions) { o.parent = parent } }

// GroupDisabled creates the group disabled.
func GroupDisabled() GroupOption { return func(o *groupOptions) { o.disabled = true } }

// GroupHubs restricts the group's devices to these linked hubs.
func GroupHubs(hubs ...string) GroupOption { return func(o *groupOptions) { o.hubs = hubs } }

// EnrollGroup creates an enrollment group named name (its group ID) for a
// new intermediate CA under the device root, and returns the CA; devices
// MintDevice issues under it are admitted while the group is enabled.
func (b *Broker) EnrollGroup(tb TB, name string, opts ...GroupOption) *pkitest.CA {
	tb.Helper()
	o := &groupOptions{}
	for _, opt := range opts {
		opt(o)
	}
	ca := o.ca
	if ca == nil {
		parent := o.parent
		if parent == nil {
			parent = b.DeviceRoot
		}
		ca = parent.Intermediate(tb, "brokertest CA "+name)
	}
	g := &provisioning.EnrollmentGroup{
		EnrollmentGroupID: name,
		Attestation: provisioning.AttestationMechanism{
			Type: provisioning.AttestationX509,
			X509: &provisioning.X509Attestation{SigningCertificates: &provisioning.X509Certificates{
				Primary: &provisioning.X509CertificateWithInfo{Certificate: string(ca.CertPEM())},
			}},
		},
		EnrollmentPolicy: provisioning.EnrollmentPolicy{ProvisioningStatus: status(!o.disabled), IoTHubs: o.hubs},
	}
	if err := g.Validate(); err != nil {
		tb.Fatalf("brokertest: EnrollGroup %q: %v", name, err)
	}
	if _, err := b.Store().PutEnrollmentGroup(context.Background(), g, ""); err != nil {
		tb.Fatalf("brokertest: EnrollGroup %q: %v", name, err)
	}
	return ca
}

// MintDevice issues a device certificate with CN registrationID under ca
// (an enrolled group's CA, or any CA to test refusals).
func (b *Broker) MintDevice(tb TB, ca *pkitest.CA, registrationID string, opts ...pkitest.Option) *pkitest.Leaf {
	tb.Helper()
	return ca.Leaf(tb, registrationID, opts...)
}

// EnrollDevice creates a self-signed device certificate and an enabled
// individual enrollment for it.
func (b *Broker) EnrollDevice(tb TB, registrationID string) *pkitest.Leaf {
	tb.Helper()
	dev := pkitest.SelfSigned(tb, registrationID)
	b.putIndividual(tb, dev, true)
	return dev
}

// SetDeviceEnabled creates or replaces the individual enrollment of dev's
// certificate, enabled or disabled. An individual enrollment decides
// alone, over any group (the seed's "disable device 3").
func (b *Broker) SetDeviceEnabled(tb TB, dev *pkitest.Leaf, enabled bool) {
	tb.Helper()
	b.putIndividual(tb, dev, enabled)
}

// DisableDevice creates or replaces a disabled individual enrollment for
// dev's certificate.
func (b *Broker) DisableDevice(tb TB, dev *pkitest.Leaf) {
	tb.Helper()
	b.putIndividual(tb, dev, false)
}

func (b *Broker) putIndividual(tb TB, dev *pkitest.Leaf, enabled bool) {
	tb.Helper()
	e := &provisioning.IndividualEnrollment{
		RegistrationID: dev.Cert.Subject.CommonName,
		Attestation: provisioning.AttestationMechanism{
			Type: provisioning.AttestationX509,
			X509: &provisioning.X509Attestation{ClientCertificates: &provisioning.X509Certificates{
				Primary: &provisioning.X509CertificateWithInfo{Certificate: string(dev.CertPEM())},
			}},
		},
		EnrollmentPolicy: provisioning.EnrollmentPolicy{ProvisioningStatus: status(enabled)},
	}
	if _, err := b.Store().PutEnrollment(context.Background(), e, ""); err != nil {
		tb.Fatalf("brokertest: enrollment %q: %v", e.RegistrationID, err)
	}
}

// EnrollTPM creates or replaces an individual TPM enrollment for the
// endorsement key ek (the marshalled TPM2B_PUBLIC a TPM device sends, e.g.
// clients/tpm.Device.EndorsementKey()). An empty registrationID means the
// EK's default one (base32 of its SHA-256, as the Azure SDKs compute it).
// It returns the registration ID.
func (b *Broker) EnrollTPM(tb TB, registrationID string, ek []byte, enabled bool) string {
	tb.Helper()
	if registrationID == "" {
		registrationID = tpmattest.RegistrationIDFromEK(ek)
	}
	e := &provisioning.IndividualEnrollment{
		RegistrationID: registrationID,
		Attestation: provisioning.AttestationMechanism{
			Type: provisioning.AttestationTPM,
			TPM:  &provisioning.TPMAttestation{EndorsementKey: base64.StdEncoding.EncodeToString(ek)},
		},
		EnrollmentPolicy: provisioning.EnrollmentPolicy{ProvisioningStatus: status(enabled)},
	}
	if err := e.Validate(); err != nil {
		tb.Fatalf("brokertest: TPM enrollment %q: %v", registrationID, err)
	}
	if _, err := b.Store().PutEnrollment(context.Background(), e, ""); err != nil {
		tb.Fatalf("brokertest: TPM enrollment %q: %v", registrationID, err)
	}
	return registrationID
}

// SetGroupEnabled enables or disables an existing group.
func (b *Broker) SetGroupEnabled(tb TB, name string, enabled bool) {
	tb.Helper()
	ctx := context.Background()
	g, err := b.Store().GetEnrollmentGroup(ctx, name)
	if err != nil {
		tb.Fatalf("brokertest: group %q: %v", name, err)
	}
	c := *g
	c.ProvisioningStatus = status(enabled)
	if _, err := b.Store().PutEnrollmentGroup(ctx, &c, g.ETag); err != nil {
		tb.Fatalf("brokertest: group %q: %v", name, err)
	}
}

// DisableGroup disables an existing group.
func (b *Broker) DisableGroup(tb TB, name string) {
	tb.Helper()
	b.SetGroupEnabled(tb, name, false)
}

// Events subscribes to every provisioning event (assigned, refused,
// failed) published on this broker from now on, until the test ends. The
// channel is buffered; events that do not fit are dropped with a log line,
// so that a test that stops reading never stalls the broker.
func (b *Broker) Events(tb TB) <-chan *provisioning.Event {
	tb.Helper()
	ch := make(chan *provisioning.Event, 1024)
	srv := b.B.MQTTServer()
	id := nextSubID()
	err := srv.Subscribe(hooks.EventFilter, id, func(_ *mqtt.Client, _ packets.Subscription, pk packets.Packet) {
		ev, err := decodeEvent(pk.Payload)
		if err != nil {
			tb.Logf("brokertest: bad event on %s: %v", pk.TopicName, err)
			return
		}
		select {
		case ch <- ev:
		default:
			tb.Logf("brokertest: event channel full; dropped %s %s", ev.Type, ev.RegistrationID)
		}
	})
	if err != nil {
		tb.Fatalf("brokertest: subscribe events: %v", err)
	}
	tb.Cleanup(func() { _ = srv.Unsubscribe(hooks.EventFilter, id) })
	return ch
}

// Dial opens a TLS connection to the MQTT listener as dev (nil: no client
// certificate).
func (b *Broker) Dial(ctx context.Context, dev *pkitest.Leaf) (*tls.Conn, error) {
	d := &tls.Dialer{NetDialer: &net.Dialer{}, Config: b.TLSConfigFor(dev)}
	c, err := d.DialContext(ctx, "tcp", b.MQTTAddr())
	if err != nil {
		return nil, err
	}
	return c.(*tls.Conn), nil
}

var subIDs struct {
	sync.Mutex
	n int
}

// nextSubID hands out inline subscription identifiers, unique per process.
func nextSubID() int {
	subIDs.Lock()
	defer subIDs.Unlock()
	subIDs.n++
	return 1000 + subIDs.n
}

func status(enabled bool) provisioning.ProvisioningStatus {
	if enabled {
		return provisioning.StatusEnabled
	}
	return provisioning.StatusDisabled
}

func writeFile(tb TB, path string, data []byte) {
	tb.Helper()
	if len(data) == 0 {
		tb.Fatalf("brokertest: nothing to write to %s", path)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		tb.Fatalf("brokertest: %v", err)
	}
}

// testLogger discards logs unless DPSBROKER_TEST_LOG is set, in which case
// they go to the test log at that level.
func testLogger(tb TB) *slog.Logger {
	lvl := os.Getenv("DPSBROKER_TEST_LOG")
	if lvl == "" {
		return slog.New(slog.DiscardHandler)
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(lvl)); err != nil {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(tbWriter{tb}, &slog.HandlerOptions{Level: level}))
}

type tbWriter struct{ tb TB }

func (w tbWriter) Write(p []byte) (int, error) {
	w.tb.Logf("%s", strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

var _ io.Writer = tbWriter{}

// errRefused is wrapped by Provision when the broker refused the CONNECT.
var errRefused = errors.New("connect refused")

// AdminClient is an admin API client that trusts the broker and carries
// its token.
func (b *Broker) AdminClient() *service.Client {
	hc := &http.Client{
		Timeout:   30 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: b.RootCAs(), ServerName: "localhost"}},
	}
	return service.New(b.AdminURL(), b.token, hc)
}
