package broker_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/dpsbroker/dpsbroker/broker"
	"github.com/dpsbroker/dpsbroker/broker/brokertest"
	"github.com/dpsbroker/dpsbroker/provisioning"
	"github.com/dpsbroker/dpsbroker/provisioning/store/redistest"
	"github.com/dpsbroker/dpsbroker/provisioning/wire"
)

// TestTwoBrokersShareRedis: two brokers on one Redis are one service. A
// device registers on one and polls its operation on the other; a group
// disabled through the admin API of one refuses new connections on the
// other and disconnects the live sessions there.
func TestTwoBrokersShareRedis(t *testing.T) {
	r := redistest.Start(t)
	b1 := brokertest.New(t, brokertest.WithRedis(r.Addr(), 0))
	b2 := brokertest.New(t, brokertest.WithRedis(r.Addr(), 0))
	factory := b1.EnrollGroup(t, "factory")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	t.Run("register on one, poll on the other", func(t *testing.T) {
		dev := b1.MintDevice(t, factory, "roaming-1")
		s1, err := b1.Connect(ctx, dev)
		if err != nil {
			t.Fatal(err)
		}
		st, body, err := s1.Request(ctx, string(wire.AppendRegisterTopic(nil, "r1")), []byte(`{"registrationId":"roaming-1"}`))
		s1.Close()
		if err != nil || st != 202 {
			t.Fatalf("register on broker 1: %d %s %v", st, body, err)
		}
		op, err := wire.DecodeOperationStatus(body)
		if err != nil {
			t.Fatal(err)
		}
		s2, err := b2.Connect(ctx, dev)
		if err != nil {
			t.Fatal(err)
		}
		defer s2.Close()
		st, body, err = s2.Request(ctx, string(wire.AppendPollTopic(nil, "r2", op.OperationID)), []byte(" "))
		if err != nil || st != 200 {
			t.Fatalf("poll on broker 2: %d %s %v", st, body, err)
		}
		final, err := wire.DecodeOperationStatus(body)
		if err != nil || final.Status != wire.StatusAssigned || final.RegistrationState.AssignedHub == "" {
			t.Fatalf("poll on broker 2: %+v %v", final, err)
		}
	})

	t.Run("disable through one admin API, enforced on the other", func(t *testing.T) {
		live, err := b2.Connect(ctx, b1.MintDevice(t, factory, "live-1"))
		if err != nil {
			t.Fatal(err)
		}
		defer live.Close()

		admin := b1.AdminClient()
		g, err := admin.GetEnrollmentGroup(ctx, "factory")
		if err != nil {
			t.Fatal(err)
		}
		g.ProvisioningStatus = provisioning.StatusDisabled
		if _, err := admin.PutEnrollmentGroup(ctx, g, g.ETag); err != nil {
			t.Fatal(err)
		}
		select {
		case <-live.Disconnected:
		case <-time.After(5 * time.Second):
			t.Fatal("the live session on broker 2 was not disconnected")
		}
		_, err = b2.Provision(ctx, b1.MintDevice(t, factory, "late-1"))
		var ce *brokertest.ConnectError
		if !errors.As(err, &ce) || !strings.Contains(ce.Reason, "enrollment group disabled") {
			t.Fatalf("new device on broker 2: %v; want refused, group disabled", err)
		}
	})
}

// TestGracefulShutdown: once shutdown begins, the broker refuses new
// connections and reports not ready, but a device already connected
// completes its registration; shutdown ends when the last session does.
func TestGracefulShutdown(t *testing.T) {
	b := brokertest.New(t, brokertest.WithConfig(func(c *broker.Config) { c.ShutdownTimeout = 30 * time.Second }))
	factory := b.EnrollGroup(t, "factory")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := b.Connect(ctx, b.MintDevice(t, factory, "inflight-1"))
	if err != nil {
		t.Fatal(err)
	}
	stopped := make(chan error, 1)
	go func() { stopped <- b.Stop() }()

	deadline := time.Now().Add(5 * time.Second)
	for {
		code, _ := httpGet(t, b.HTTPURL()+"/readyz")
		if code == 503 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("/readyz still ready after shutdown began")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := b.Provision(ctx, b.MintDevice(t, factory, "newcomer-1")); err == nil {
		t.Error("a new device connected during shutdown")
	}
	st, err := s.Register(ctx)
	if err != nil || st.Status != wire.StatusAssigned {
		t.Fatalf("in-flight registration: %+v, %v", st, err)
	}
	select {
	case <-stopped:
		t.Fatal("shutdown finished while a session was still open")
	default:
	}
	s.Close()
	select {
	case err := <-stopped:
		if err != nil {
			t.Fatalf("shutdown: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("shutdown did not finish after the last session ended")
	}
}

// TestLiveSessionsFollowChanges: live sessions are cut exactly when a
// change makes the seed rules refuse their device, and kept otherwise.
func TestLiveSessionsFollowChanges(t *testing.T) {
	b := brokertest.New(t)
	factory := b.EnrollGroup(t, "factory")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dev1, dev2 := b.MintDevice(t, factory, "live-1"), b.MintDevice(t, factory, "live-2")
	s1, err := b.Connect(ctx, dev1)
	if err != nil {
		t.Fatal(err)
	}
	defer s1.Close()
	s2, err := b.Connect(ctx, dev2)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()

	alive := func(name string, s *brokertest.Session) {
		t.Helper()
		// Longer than the broker's coalescing of change bursts, so that a
		// wrong disconnect would have happened by now.
		time.Sleep(300 * time.Millisecond)
		if st, err := s.Register(ctx); err != nil || st.Status != wire.StatusAssigned {
			t.Fatalf("%s: %+v, %v; want the session kept", name, st, err)
		}
	}
	gone := func(name string, s *brokertest.Session) {
		t.Helper()
		select {
		case <-s.Disconnected:
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: session not disconnected", name)
		}
	}

	b.SetGroupEnabled(t, "factory", true) // a rewrite that changes nothing
	alive("after a benign group write", s1)
	// A disabled group above an enabled one: the first enrolled
	// certificate walking up from the leaf decides, so nothing changes.
	b.EnrollGroup(t, "root", brokertest.GroupCA(b.DeviceRoot), brokertest.GroupDisabled())
	alive("after a disabled group on the root", s1)
	b.DisableDevice(t, dev2)
	gone("live-2 after its individual enrollment was disabled", s2)
	alive("live-1 after live-2 was disabled", s1)
	b.DisableGroup(t, "factory")
	gone("live-1 after its group was disabled", s1)
}
