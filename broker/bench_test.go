package broker_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	mpackets "github.com/mochi-mqtt/server/v2/packets"

	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"

	"github.com/dpsbroker/dpsbroker/broker"
	"github.com/dpsbroker/dpsbroker/broker/brokertest"
	"github.com/dpsbroker/dpsbroker/provisioning/pkitest"
	"github.com/dpsbroker/dpsbroker/provisioning/store/redistest"
	"github.com/dpsbroker/dpsbroker/provisioning/wire"
)

// benchReceiveMaximum is the baseline clients' receive maximum: paho's
// default (65535) allocates a 512 KiB channel per connection, as the
// devices of brokertest avoid too.
var benchReceiveMaximum uint16 = 16

// benchParallelism times GOMAXPROCS is the number of concurrent devices.
const benchParallelism = 8

// BenchmarkProvisionX509 measures complete X.509 provisionings over mTLS
// (connect, subscribe, register -> 202, poll -> 200 assigned, disconnect)
// with paho.golang clients, against a baseline measured in the same
// iteration: a plain mochi broker with the same server TLS configuration
// and no provisioning hooks, doing mTLS connect + subscribe + one
// request/response with the same client library. Each run does b.N
// baseline round trips and b.N provisionings, alternating in ten slices,
// so that every reported ratio pairs measurements taken side by side (the
// machine is shared and its speed drifts). ns/op is that of a
// provisioning; B/op and allocs/op cover one of each. It runs on the
// embedded store and on Redis (a real redis-server on loopback).
//
//	go test -run '^$' -bench BenchmarkProvisionX509 -benchtime 2000x -count 3 ./broker/
func BenchmarkProvisionX509(b *testing.B) {
	for _, store := range []string{"embedded", "redis"} {
		b.Run("store="+store, func(b *testing.B) {
			opts := []brokertest.Option{brokertest.WithConfig(func(c *broker.Config) { c.LogLevel = "error" })}
			if store == "redis" {
				opts = append(opts, brokertest.WithRedis(redistest.Start(b).Addr(), 0))
			}
			tb := brokertest.New(b, opts...)
			factory := tb.EnrollGroup(b, "bench")
			devs := mintBenchDevices(b, tb, factory)
			base := startBaseline(b, tb.B.TLSConfig())
			var seq atomic.Int64

			baseline := func(ctx context.Context, dev *pkitest.Leaf) error {
				// A fresh client ID each time: mochi's cleanup of a
				// session can race a reconnect with the same ID and drop
				// the new session's subscription.
				id := fmt.Sprintf("%s-%d", dev.Cert.Subject.CommonName, seq.Add(1))
				return base.roundTrip(ctx, tb.TLSConfigFor(dev), id)
			}
			provision := func(ctx context.Context, dev *pkitest.Leaf) error {
				st, err := tb.Provision(ctx, dev)
				if err == nil && st.Status != wire.StatusAssigned {
					err = fmt.Errorf("status %s", st.Status)
				}
				return err
			}
			// Alternate the two in slices, so that drift in the machine's
			// speed (other tenants) hits both alike.
			const slices = 10
			var baseTime, provTime time.Duration
			b.ReportAllocs()
			b.ResetTimer()
			for i := range slices {
				n := b.N/slices + btoi(i < b.N%slices)
				if n == 0 {
					continue
				}
				baseTime += runParallel(b, n, devs, baseline)
				provTime += runParallel(b, n, devs, provision)
			}
			baseRate := float64(b.N) / baseTime.Seconds()
			provRate := float64(b.N) / provTime.Seconds()
			b.ReportMetric(float64(provTime.Nanoseconds())/float64(b.N), "ns/op")
			b.ReportMetric(provRate, "provisions/s")
			b.ReportMetric(baseRate, "baseline/s")
			b.ReportMetric(provRate/baseRate, "ratio")
		})
	}
}

func mintBenchDevices(b *testing.B, tb *brokertest.Broker, ca *pkitest.CA) []*pkitest.Leaf {
	n := benchParallelism * 64 // more than enough goroutines on any machine here
	devs := make([]*pkitest.Leaf, n)
	for i := range devs {
		devs[i] = tb.MintDevice(b, ca, fmt.Sprintf("bench-%04d", i))
	}
	return devs
}

// runParallel runs op n times from benchParallelism x GOMAXPROCS
// goroutines, each with a device of its own (two sessions with one client
// ID would take each other over), and returns the time it took.
func runParallel(b *testing.B, n int, devs []*pkitest.Leaf, op func(context.Context, *pkitest.Leaf) error) time.Duration {
	var next, left atomic.Int64
	left.Store(int64(n))
	var failed atomic.Value
	workers := benchParallelism * runtime.GOMAXPROCS(0)
	if workers > len(devs) {
		b.Fatalf("%d workers, %d devices", workers, len(devs))
	}
	var wg sync.WaitGroup
	start := time.Now()
	for range workers {
		dev := devs[next.Add(1)-1]
		wg.Go(func() {
			for left.Add(-1) >= 0 {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				err := op(ctx, dev)
				cancel()
				if err != nil {
					failed.Store(err)
					return
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	if err, ok := failed.Load().(error); ok {
		b.Fatal(err)
	}
	return elapsed
}

func btoi(v bool) int {
	if v {
		return 1
	}
	return 0
}

// baseline is a plain mochi broker: the same server TLS configuration,
// every client admitted, and a hook that answers each "req/<id>" publish
// with a QoS 1 publish on "resp/<id>".
type baseline struct {
	addr string
}

type echoHook struct {
	mqtt.HookBase
	srv *mqtt.Server
}

func (h *echoHook) ID() string { return "echo" }
func (h *echoHook) Provides(b byte) bool {
	return bytes.Contains([]byte{mqtt.OnConnectAuthenticate, mqtt.OnACLCheck, mqtt.OnPublish}, []byte{b})
}
func (h *echoHook) OnConnectAuthenticate(*mqtt.Client, mpackets.Packet) bool { return true }
func (h *echoHook) OnACLCheck(*mqtt.Client, string, bool) bool               { return true }
func (h *echoHook) OnPublish(cl *mqtt.Client, pk mpackets.Packet) (mpackets.Packet, error) {
	if cl.Net.Inline {
		return pk, nil
	}
	_ = h.srv.Publish("resp/"+cl.ID, []byte(`{"operationId":"x","status":"assigned"}`), false, 1)
	return pk, mpackets.CodeSuccessIgnore
}

func startBaseline(b *testing.B, tlsCfg *tls.Config) *baseline {
	srv := mqtt.New(&mqtt.Options{InlineClient: true, Logger: slog.New(slog.DiscardHandler)})
	if err := srv.AddHook(&echoHook{srv: srv}, nil); err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	if err := srv.AddListener(listeners.NewNet("baseline", tls.NewListener(ln, tlsCfg))); err != nil {
		b.Fatal(err)
	}
	if err := srv.Serve(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = srv.Close() })
	return &baseline{addr: ln.Addr().String()}
}

// roundTrip is the baseline's unit of work: mTLS connect, CONNECT,
// SUBSCRIBE, one request and its response, DISCONNECT.
func (bl *baseline) roundTrip(ctx context.Context, cfg *tls.Config, id string) error {
	conn, err := (&tls.Dialer{Config: cfg}).DialContext(ctx, "tcp", bl.addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	got := make(chan struct{}, 1)
	c := paho.NewClient(paho.ClientConfig{
		Conn: packets.NewThreadSafeConn(conn),
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(paho.PublishReceived) (bool, error) {
			select {
			case got <- struct{}{}:
			default:
			}
			return true, nil
		}},
	})
	if _, err := c.Connect(ctx, &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 30,
		Properties: &paho.ConnectProperties{ReceiveMaximum: &benchReceiveMaximum, RequestProblemInfo: true}}); err != nil {
		return err
	}
	if _, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "resp/" + id, QoS: 1}}}); err != nil {
		return err
	}
	if _, err := c.Publish(ctx, &paho.Publish{Topic: "req/" + id, QoS: 1, Payload: []byte(`{"registrationId":"` + id + `"}`)}); err != nil {
		return err
	}
	select {
	case <-got:
	case <-ctx.Done():
		return ctx.Err()
	}
	return c.Disconnect(&paho.Disconnect{ReasonCode: 0})
}
