package hooks_test

import (
	"bytes"
	"crypto/tls"
	"io"
	"log/slog"
	"testing"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/dpsbroker/dpsbroker/hooks"
	"github.com/dpsbroker/dpsbroker/provisioning"
	"github.com/dpsbroker/dpsbroker/provisioning/pkitest"
)

// The benchmarks compare the DPS broker with plain mochi over the same
// mutual TLS on loopback, measured in the same run:
//
//	go test -run '^$' -bench . -benchtime 2s ./hooks/
//
// Provision is a whole DPS flow (register, PUBACK, 202, poll, PUBACK,
// 200: two QoS 1 round trips with store writes and the X.509 decision);
// BaselineRoundTrips is two QoS 1 publishes that the device receives back
// through plain mochi. Connect compares an mTLS connect with the X.509
// decision against plain mochi's allow-all connect.

func BenchmarkProvision(b *testing.B) {
	e := newEnv(b, func(o *hooks.Options) { o.PollBurst = 1 << 30 })
	e.putGroup("group-a", e.interA, provisioning.StatusEnabled)
	d := e.deviceV5(e.interA.Leaf(b, "dev-bench"))
	b.ResetTimer()
	for b.Loop() {
		provision(b, d, "dev-bench", 1)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "provisions/s")
}

func BenchmarkBaselineRoundTrips(b *testing.B) {
	e := newPlainEnv(b)
	leaf := e.interA.Leaf(b, "dev-plain")
	d, ca, err := e.dialV5(leaf, "dev-plain", "")
	if err != nil {
		b.Fatalf("connect: %v %+v", err, ca)
	}
	d.subscribe("plain/dev-plain", 1)
	b.ResetTimer()
	for b.Loop() {
		for range 2 {
			if err := d.publish("plain/dev-plain", 1, []byte(`{"registrationId":"dev-plain"}`)); err != nil {
				b.Fatal(err)
			}
			if _, ok := d.next(); !ok {
				b.Fatal("no echo")
			}
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "flows/s")
}

func BenchmarkConnect(b *testing.B) {
	e := newEnv(b)
	e.putGroup("group-a", e.interA, provisioning.StatusEnabled)
	leaf := e.interA.Leaf(b, "dev-conn")
	b.ResetTimer()
	for b.Loop() {
		d, ca, err := e.dialV5(leaf, "dev-conn", username("dev-conn"))
		if err != nil {
			b.Fatalf("connect: %v %+v", err, ca)
		}
		d.close()
	}
}

func BenchmarkBaselineConnect(b *testing.B) {
	e := newPlainEnv(b)
	leaf := e.interA.Leaf(b, "dev-conn")
	b.ResetTimer()
	for b.Loop() {
		d, ca, err := e.dialV5(leaf, "dev-conn", "")
		if err != nil {
			b.Fatalf("connect: %v %+v", err, ca)
		}
		d.close()
	}
}

// newPlainEnv is plain mochi with the same mutual TLS and allow-all auth.
func newPlainEnv(b *testing.B) *env {
	b.Helper()
	e := &env{t: b}
	e.serverCA = pkitest.NewRoot(b)
	e.root = pkitest.NewRoot(b)
	e.interA = e.root.Intermediate(b, "Intermediate A")
	e.srv = mqtt.New(&mqtt.Options{InlineClient: true, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err := e.srv.AddHook(new(allowAll), nil); err != nil {
		b.Fatal(err)
	}
	server := e.serverCA.Server(b)
	l := listeners.NewTCP(listeners.Config{ID: "plain", Address: "127.0.0.1:0", TLSConfig: &tls.Config{
		Certificates: []tls.Certificate{server.TLSCertificate()},
		ClientAuth:   tls.RequireAnyClientCert,
		MinVersion:   tls.VersionTLS12,
	}})
	if err := e.srv.AddListener(l); err != nil {
		b.Fatal(err)
	}
	if err := e.srv.Serve(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = e.srv.Close() })
	e.addr = l.Address()
	return e
}

// allowAll is mochi's auth.AllowHook (which would pull in a YAML module).
type allowAll struct{ mqtt.HookBase }

func (h *allowAll) ID() string { return "allow-all" }

func (h *allowAll) Provides(b byte) bool {
	return bytes.Contains([]byte{mqtt.OnConnectAuthenticate, mqtt.OnACLCheck}, []byte{b})
}

func (h *allowAll) OnConnectAuthenticate(*mqtt.Client, packets.Packet) bool { return true }

func (h *allowAll) OnACLCheck(*mqtt.Client, string, bool) bool { return true }
