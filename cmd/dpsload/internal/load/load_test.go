package load_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"testing"
	"time"

	"github.com/dpsbroker/dpsbroker/cmd/dpsload/internal/baseline"
	"github.com/dpsbroker/dpsbroker/cmd/dpsload/internal/fleet"
	"github.com/dpsbroker/dpsbroker/cmd/dpsload/internal/load"
	"github.com/dpsbroker/dpsbroker/cmd/dpsload/internal/mqttraw"
	"github.com/dpsbroker/dpsbroker/provisioning/pkitest"
)

// env is a baseline broker trusting a fresh device PKI, with minted devices.
type env struct {
	target  load.Target
	devices []*load.Device
	srv     *baseline.Server
}

func newEnv(t *testing.T, n int) *env {
	t.Helper()
	pki, err := fleet.NewPKI("load test")
	if err != nil {
		t.Fatal(err)
	}
	devs, err := pki.Mint(context.Background(), "dev-", n)
	if err != nil {
		t.Fatal(err)
	}
	serverRoot := pkitest.NewRoot(t)
	server := serverRoot.Server(t)
	clientCAs := x509.NewCertPool()
	clientCAs.AddCert(pki.Anchor)
	cfg, err := baseline.TLSConfig(server.TLSCertificate(), clientCAs, baseline.KexDefault, false)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := baseline.Start("127.0.0.1:0", cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	return &env{
		target:  load.Target{Addr: srv.Addr(), TLS: &tls.Config{RootCAs: serverRoot.Pool(), ServerName: "localhost"}},
		devices: devs,
		srv:     srv,
	}
}

func TestRunModes(t *testing.T) {
	e := newEnv(t, 8)
	tests := []struct {
		name  string
		cfg   load.Config
		check func(t *testing.T, r *load.Result)
	}{
		{
			name: "closed loop bounded by count",
			cfg:  load.Config{Concurrency: 4, Count: 12},
			check: func(t *testing.T, r *load.Result) {
				if r.Mode != "closed" || r.Completed != 12 || r.TotalCompleted != 12 {
					t.Errorf("mode %s completed %d total %d", r.Mode, r.Completed, r.TotalCompleted)
				}
			},
		},
		{
			name: "open loop bounded by count",
			cfg:  load.Config{Concurrency: 2, Count: 10, Rate: 200},
			check: func(t *testing.T, r *load.Result) {
				if r.Mode != "open" || r.Completed != 10 {
					t.Errorf("mode %s completed %d", r.Mode, r.Completed)
				}
			},
		},
		{
			name: "open loop bounded by duration, with warmup",
			cfg:  load.Config{Concurrency: 2, Rate: 100, Warmup: 100 * time.Millisecond, Duration: 300 * time.Millisecond},
			check: func(t *testing.T, r *load.Result) {
				// What ran in the warmup is in the totals only.
				if r.Completed == 0 || r.TotalCompleted < r.Completed || r.WindowSeconds <= 0 {
					t.Errorf("completed %d total %d window %v", r.Completed, r.TotalCompleted, r.WindowSeconds)
				}
			},
		},
		{
			name: "closed loop bounded by duration, MQTT 3.1.1",
			cfg:  load.Config{Concurrency: 3, Duration: 200 * time.Millisecond, MQTTVersion: mqttraw.V311},
			check: func(t *testing.T, r *load.Result) {
				if r.Completed == 0 {
					t.Errorf("nothing completed")
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := tt.cfg
			cfg.Label = "test"
			cfg.Targets = []load.Target{e.target}
			cfg.Devices = e.devices
			cfg.IDScope = "0ne00000000"
			if cfg.MQTTVersion == 0 {
				cfg.MQTTVersion = mqttraw.V5
			}
			cfg.Timeout = 10 * time.Second
			cfg.PollAfter = -1
			cfg.Server = load.PIDProbe{} // no processes: zero CPU, no error
			r, err := load.Run(context.Background(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			if r.Errors != 0 || r.TotalErrors != 0 {
				t.Fatalf("errors %v", r.ErrorSamples)
			}
			if r.Latency.Count != uint64(r.Completed) {
				t.Errorf("latency count %d for %d completed", r.Latency.Count, r.Completed)
			}
			tt.check(t, r)
		})
	}
}

func TestRunRejectsBadConfig(t *testing.T) {
	e := newEnv(t, 2)
	tests := []struct {
		name string
		cfg  load.Config
	}{
		{"no target", load.Config{Devices: e.devices, Concurrency: 1, Count: 1, MQTTVersion: 5, Timeout: time.Second}},
		{"fewer devices than concurrency", load.Config{Targets: []load.Target{e.target}, Devices: e.devices, Concurrency: 3, Count: 1, MQTTVersion: 5, Timeout: time.Second}},
		{"unbounded", load.Config{Targets: []load.Target{e.target}, Devices: e.devices, Concurrency: 1, MQTTVersion: 5, Timeout: time.Second}},
		{"bad version", load.Config{Targets: []load.Target{e.target}, Devices: e.devices, Concurrency: 1, Count: 1, MQTTVersion: 3, Timeout: time.Second}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := load.Run(context.Background(), tt.cfg); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

// TestErrorsByReason: a broker that refuses the TLS handshake (devices of
// an unknown CA) yields TLS-phase errors, counted, not a failed run.
func TestErrorsByReason(t *testing.T) {
	e := newEnv(t, 2)
	other, err := fleet.NewPKI("stranger")
	if err != nil {
		t.Fatal(err)
	}
	strangers, err := other.Mint(context.Background(), "x-", 2)
	if err != nil {
		t.Fatal(err)
	}
	r, err := load.Run(context.Background(), load.Config{
		Targets: []load.Target{e.target}, Devices: strangers, Concurrency: 1, Count: 3,
		MQTTVersion: mqttraw.V5, Timeout: 5 * time.Second, PollAfter: -1,
	})
	if err != nil {
		t.Fatal(err)
	}
	if r.Completed != 0 || r.Errors != 3 {
		t.Fatalf("completed %d errors %d %v", r.Completed, r.Errors, r.ErrorsByReason)
	}
	// TLS 1.3: the client learns of the refusal on its first read, after
	// the handshake; the reason names the alert.
	t.Logf("reasons %v %v", r.ErrorsByReason, r.ErrorSamples)
	for reason := range r.ErrorsByReason {
		switch reason {
		case "tls-alert:unknown-certificate-authority":
		default:
			t.Errorf("unexpected reason %q (%s)", reason, r.ErrorSamples[reason])
		}
	}
}
