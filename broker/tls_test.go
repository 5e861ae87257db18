package broker_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/dpsbroker/dpsbroker/broker"
	"github.com/dpsbroker/dpsbroker/broker/brokertest"
	"github.com/dpsbroker/dpsbroker/provisioning/pkitest"
	"github.com/dpsbroker/dpsbroker/provisioning/wire"
)

// TestFastPathOption: fast-path answers the register request itself with
// the final 200; the default keeps 202 + poll.
func TestFastPathOption(t *testing.T) {
	for _, fast := range []bool{false, true} {
		t.Run(fmt.Sprintf("fast-path=%v", fast), func(t *testing.T) {
			b := brokertest.New(t, brokertest.WithConfig(func(c *broker.Config) { c.FastPath = fast }))
			dev := b.MintDevice(t, b.EnrollGroup(t, "g"), "dev-1")
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			s, err := b.Connect(ctx, dev)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			body, _ := json.Marshal(map[string]string{"registrationId": "dev-1"})
			st, resp, err := s.Request(ctx, string(wire.AppendRegisterTopic(nil, "1")), body)
			if err != nil {
				t.Fatal(err)
			}
			op, err := wire.DecodeOperationStatus(resp)
			if err != nil {
				t.Fatalf("%d %s: %v", st, resp, err)
			}
			want, wantStatus := 202, wire.StatusAssigning
			if fast {
				want, wantStatus = 200, wire.StatusAssigned
			}
			if st != want || op.Status != wantStatus || op.OperationID == "" {
				t.Fatalf("register answered %d %s, want %d %s", st, resp, want, wantStatus)
			}
			if fast && (op.RegistrationState == nil || op.RegistrationState.AssignedHub != "hub-1.example.net" || op.RegistrationState.DeviceID != "dev-1") {
				t.Fatalf("fast path state %s", resp)
			}
		})
	}
}

// resumingDialer dials dev with a session cache of its own, as a device
// that keeps its TLS session between connections.
type resumingDialer struct {
	b     *brokertest.Broker
	dev   *pkitest.Leaf
	cache tls.ClientSessionCache
}

// connect provisions over a fresh connection and reports whether the TLS
// session was resumed.
func (d *resumingDialer) provision(ctx context.Context) (resumed bool, st *wire.RegistrationOperationStatus, err error) {
	cfg := d.b.TLSConfigFor(d.dev)
	cfg.ClientSessionCache = d.cache
	conn, err := (&tls.Dialer{Config: cfg}).DialContext(ctx, "tcp", d.b.MQTTAddr())
	if err != nil {
		return false, nil, err
	}
	tc := conn.(*tls.Conn)
	resumed = tc.ConnectionState().DidResume
	s, err := d.b.ConnectConn(ctx, tc, d.dev.Cert.Subject.CommonName)
	if err != nil {
		return resumed, nil, err
	}
	defer s.Close()
	st, err = s.Register(ctx)
	return resumed, st, err
}

// TestSessionResumption: with session-tickets a returning device resumes
// its TLS session, the hook still sees its certificate chain and decides
// again, so a device disabled after its first connection is refused on a
// resumed one (and admitted again once re-enabled). Without
// session-tickets nothing resumes.
func TestSessionResumption(t *testing.T) {
	for _, kex := range []string{broker.KeyExchangeDefault, broker.KeyExchangeX25519, broker.KeyExchangeP256} {
		t.Run("tickets/"+kex, func(t *testing.T) {
			b := brokertest.New(t, brokertest.WithConfig(func(c *broker.Config) {
				c.SessionTickets, c.KeyExchange = true, kex
			}))
			dev := b.MintDevice(t, b.EnrollGroup(t, "g"), "dev-r")
			d := &resumingDialer{b: b, dev: dev, cache: tls.NewLRUClientSessionCache(4)}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()

			resumed, st, err := d.provision(ctx)
			if err != nil || st.Status != wire.StatusAssigned || resumed {
				t.Fatalf("first connection: resumed=%v %+v %v", resumed, st, err)
			}
			resumed, st, err = d.provision(ctx)
			if err != nil || st.Status != wire.StatusAssigned {
				t.Fatalf("second connection: %+v %v", st, err)
			}
			if !resumed {
				t.Fatal("second connection did not resume the TLS session")
			}
			if st.RegistrationState.X509 == nil || st.RegistrationState.X509.CertificateInfo == nil ||
				st.RegistrationState.X509.CertificateInfo.SubjectName != "CN=dev-r" {
				t.Fatalf("resumed session: certificate info %+v", st.RegistrationState.X509)
			}

			b.DisableDevice(t, dev)
			resumed, _, err = d.provision(ctx)
			var ce *brokertest.ConnectError
			if !errors.As(err, &ce) || ce.ReasonCode != 0x87 {
				t.Fatalf("disabled device on a resumed session: %v, want CONNACK 0x87", err)
			}
			if !resumed {
				t.Fatal("the refused connection did not resume: the test proves nothing")
			}

			b.SetDeviceEnabled(t, dev, true)
			if resumed, st, err = d.provision(ctx); err != nil || st.Status != wire.StatusAssigned || !resumed {
				t.Fatalf("re-enabled: resumed=%v %+v %v", resumed, st, err)
			}
		})
	}
	t.Run("no tickets", func(t *testing.T) {
		b := brokertest.New(t)
		dev := b.MintDevice(t, b.EnrollGroup(t, "g"), "dev-n")
		d := &resumingDialer{b: b, dev: dev, cache: tls.NewLRUClientSessionCache(4)}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for i := range 2 {
			resumed, st, err := d.provision(ctx)
			if err != nil || st.Status != wire.StatusAssigned || resumed {
				t.Fatalf("connection %d: resumed=%v %+v %v", i, resumed, st, err)
			}
		}
	})
}

// TestKeyExchange: the negotiated TLS 1.3 group follows key-exchange
// when the device offers every group (as Go clients do).
func TestKeyExchange(t *testing.T) {
	for _, c := range []struct {
		setting string
		want    tls.CurveID
	}{
		{broker.KeyExchangeDefault, tls.X25519MLKEM768},
		{broker.KeyExchangeHybrid, tls.X25519MLKEM768},
		{broker.KeyExchangeX25519, tls.X25519},
		{broker.KeyExchangeP256, tls.CurveP256},
	} {
		t.Run(c.setting, func(t *testing.T) {
			b := brokertest.New(t, brokertest.WithConfig(func(cfg *broker.Config) { cfg.KeyExchange = c.setting }))
			dev := b.MintDevice(t, b.EnrollGroup(t, "g"), "dev-k")
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			conn, err := b.Dial(ctx, dev)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			if got := conn.ConnectionState().CurveID; got != c.want {
				t.Fatalf("negotiated %v, want %v", got, c.want)
			}
		})
	}
}

// TestDevPKIServerKey: the development server certificate is ECDSA P-256,
// the cheapest server signature (an RSA-2048 signature costs ~30x more).
func TestDevPKIServerKey(t *testing.T) {
	dir := t.TempDir()
	cfg := broker.DefaultConfig()
	cfg.DataDir = filepath.Join(dir, "data")
	cfg.MQTTAddr, cfg.WSAddr, cfg.AdminAddr, cfg.HTTPAddr = "127.0.0.1:0", "", "", ""
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	bb, err := broker.New(ctx, cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if err := bb.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = bb.Shutdown(context.Background()) }()
	certs := bb.TLSConfig().Certificates
	if len(certs) != 1 || certs[0].Leaf == nil {
		t.Fatalf("server certificates %+v", certs)
	}
	pub, ok := certs[0].Leaf.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		t.Fatalf("development server key %T, want ECDSA P-256", certs[0].Leaf.PublicKey)
	}
}

// TestNewFailsCleanly: a broker that cannot start (its MQTT address is
// taken, its store file locked by another broker) returns an error, does
// not panic, and releases what it had opened, so a retry succeeds.
func TestNewFailsCleanly(t *testing.T) {
	dir := t.TempDir()
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	cfg := broker.DefaultConfig()
	cfg.DataDir = filepath.Join(dir, "data")
	cfg.MQTTAddr, cfg.WSAddr, cfg.AdminAddr, cfg.HTTPAddr = taken.Addr().String(), "", "", ""
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if bb, err := broker.New(ctx, cfg, slog.New(slog.DiscardHandler)); err == nil || bb != nil {
		t.Fatalf("New on a taken address: %v, %v; want an error", bb, err)
	}
	// The store file was released: a broker on a free port opens it.
	cfg.MQTTAddr = "127.0.0.1:0"
	bb, err := broker.New(ctx, cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("New after a failed New: %v", err)
	}
	_ = bb.Shutdown(context.Background())
}
