package broker_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/dpsbroker/dpsbroker/broker"
	"github.com/dpsbroker/dpsbroker/broker/brokertest"
	"github.com/dpsbroker/dpsbroker/provisioning/wire"
)

// TestConnectTimeout: a connection that never completes TLS or never sends
// CONNECT is closed after ConnectTimeout, on both listeners (mochi sets no
// deadline before CONNECT).
func TestConnectTimeout(t *testing.T) {
	b := brokertest.New(t, brokertest.WithConfig(func(c *broker.Config) { c.ConnectTimeout = 300 * time.Millisecond }))
	factory := b.EnrollGroup(t, "factory")

	t.Run("tcp without TLS", func(t *testing.T) {
		for _, addr := range []string{b.MQTTAddr(), b.B.WSAddr()} {
			if !closedWithin(dialRaw(t, addr), 5*time.Second) {
				t.Errorf("%s: idle TCP connection still open", addr)
			}
		}
	})
	t.Run("tls without CONNECT", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c, err := b.Dial(ctx, b.MintDevice(t, factory, "silent-1"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := c.HandshakeContext(ctx); err != nil {
			t.Fatal(err)
		}
		if !closedWithin(c, 5*time.Second) {
			t.Error("TLS connection without CONNECT still open")
		}
	})
	t.Run("websocket without CONNECT", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c, err := b.DialWebSocket(ctx, b.MintDevice(t, factory, "silent-2"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if !closedWithin(c, 5*time.Second) {
			t.Error("WebSocket connection without CONNECT still open")
		}
	})
	t.Run("a device that sends CONNECT in time stays", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		s, err := b.Connect(ctx, b.MintDevice(t, factory, "prompt-1"))
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		time.Sleep(600 * time.Millisecond) // twice the connect timeout
		if st, err := s.Register(ctx); err != nil || st.Status != wire.StatusAssigned {
			t.Fatalf("register after the connect timeout: %+v, %v", st, err)
		}
	})
}

// TestConnectionLimits: the global and the per-IP caps refuse connections
// beyond them at accept time, and free slots are reused.
func TestConnectionLimits(t *testing.T) {
	for _, tc := range []struct {
		name        string
		global, ip  int
		wantAllowed int
		wantReason  string
	}{
		{"global", 3, 0, 3, "max_connections"},
		{"per ip", 0, 2, 2, "max_connections_per_ip"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := brokertest.New(t, brokertest.WithConfig(func(c *broker.Config) {
				c.MaxConnections, c.MaxConnectionsPerIP = tc.global, tc.ip
				c.ConnectTimeout = 30 * time.Second
			}))
			factory := b.EnrollGroup(t, "factory")
			var held []io.Closer
			for i := 0; i < tc.wantAllowed; i++ {
				c := dialRaw(t, b.MQTTAddr())
				held = append(held, c)
			}
			// The listener counts a connection when it accepts it; wait
			// until all held ones are counted before probing the cap.
			waitMetric(t, b, `dpsbroker_connections_open{listener="mqtts"}`, float64(tc.wantAllowed))
			over := dialRaw(t, b.MQTTAddr())
			if !closedWithin(over, 5*time.Second) {
				t.Fatal("connection over the cap was not closed")
			}
			// WebSocket connections share the cap.
			if !closedWithin(dialRaw(t, b.B.WSAddr()), 5*time.Second) {
				t.Fatal("websocket connection over the cap was not closed")
			}
			waitMetric(t, b, `dpsbroker_connections_rejected_total{listener="mqtts",reason="`+tc.wantReason+`"}`, 1)
			for _, h := range held[:1] {
				_ = h.Close()
			}
			waitMetric(t, b, `dpsbroker_connections_open{listener="mqtts"}`, float64(tc.wantAllowed-1))
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if st, err := b.Provision(ctx, b.MintDevice(t, factory, "after-release")); err != nil || st.Status != wire.StatusAssigned {
				t.Fatalf("provisioning in the freed slot: %+v, %v", st, err)
			}
		})
	}
}

// TestOversizePacket: a publish over MaxPacketSize drops that device's
// connection and nobody else's.
func TestOversizePacket(t *testing.T) {
	b := brokertest.New(t, brokertest.WithConfig(func(c *broker.Config) { c.MaxPacketSize = 4096 }))
	factory := b.EnrollGroup(t, "factory")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	big, err := b.Connect(ctx, b.MintDevice(t, factory, "big-1"))
	if err != nil {
		t.Fatal(err)
	}
	other, err := b.Connect(ctx, b.MintDevice(t, factory, "small-1"))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()

	body := append([]byte(`{"registrationId":"big-1","payload":{"x":"`), bytes.Repeat([]byte("a"), 8192)...)
	body = append(body, `"}}`...)
	pctx, pcancel := context.WithTimeout(ctx, time.Second)
	_, _ = big.Client.Publish(pctx, &paho.Publish{Topic: string(wire.AppendRegisterTopic(nil, "1")), QoS: 1, Payload: body})
	pcancel()
	select {
	case <-big.Disconnected:
	case <-time.After(5 * time.Second):
		t.Fatal("the oversize publisher is still connected")
	}
	if st, err := other.Register(ctx); err != nil || st.Status != wire.StatusAssigned {
		t.Fatalf("the other device: %+v, %v", st, err)
	}
}

// TestOpsEndpoints: health, readiness (store reachable) and metrics.
func TestOpsEndpoints(t *testing.T) {
	b := brokertest.New(t)
	factory := b.EnrollGroup(t, "factory")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := b.Provision(ctx, b.MintDevice(t, factory, "metered-1")); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]string{
		"/healthz": "ok",
		"/readyz":  "ready",
		"/metrics": `dpsbroker_provisioning_events_total{attestation="x509",code="0",outcome="assigned"} 1`,
	} {
		code, body := httpGet(t, b.HTTPURL()+path)
		if code != 200 || !strings.Contains(body, want) {
			t.Errorf("%s: %d, want 200 with %q in:\n%.2000s", path, code, want, body)
		}
	}
	_, body := httpGet(t, b.HTTPURL()+"/metrics")
	for _, name := range []string{"dpsbroker_decision_seconds_bucket", "dpsbroker_store_call_seconds_bucket", "go_goroutines", "process_cpu_seconds_total"} {
		if !strings.Contains(body, name) {
			t.Errorf("/metrics lacks %s", name)
		}
	}
}

// TestPprofEndpoint: runtime profiles are served only when asked for.
func TestPprofEndpoint(t *testing.T) {
	for _, on := range []bool{false, true} {
		t.Run(fmt.Sprintf("pprof=%v", on), func(t *testing.T) {
			b := brokertest.New(t, brokertest.WithConfig(func(c *broker.Config) { c.Pprof = on }))
			want := http.StatusNotFound
			if on {
				want = http.StatusOK
			}
			for _, path := range []string{"/debug/pprof/", "/debug/pprof/goroutine?debug=1", "/debug/pprof/heap"} {
				if code, _ := httpGet(t, b.HTTPURL()+path); code != want {
					t.Errorf("%s: %d, want %d", path, code, want)
				}
			}
		})
	}
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{}}}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// waitMetric polls /metrics until the sample line reaches want.
func waitMetric(t *testing.T, b *brokertest.Broker, sample string, want float64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	last := ""
	for time.Now().Before(deadline) {
		_, body := httpGet(t, b.HTTPURL()+"/metrics")
		for _, line := range strings.Split(body, "\n") {
			if v, ok := strings.CutPrefix(line, sample+" "); ok {
				last = v
				var got float64
				if _, err := fmt.Sscan(v, &got); err == nil && got == want {
					return
				}
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("metric %s = %q, want %v", sample, last, want)
}
