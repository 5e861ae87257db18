package broker_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/dpsbroker/dpsbroker/broker/brokertest"
	"github.com/dpsbroker/dpsbroker/provisioning/pkitest"
	"github.com/dpsbroker/dpsbroker/provisioning/store/redistest"
	"github.com/dpsbroker/dpsbroker/provisioning/wire"
)

// seedFleet is the five-device hierarchy of the product's origin story:
// root -> A -> devices 1-3, root -> B -> devices 4-5.
type seedFleet struct {
	root, a, b *pkitest.CA
	devices    []*pkitest.Leaf // device-1 ... device-5
}

func newSeedFleet(t *testing.T, b *brokertest.Broker) *seedFleet {
	t.Helper()
	f := &seedFleet{root: b.DeviceRoot}
	f.a = f.root.Intermediate(t, "seed certificate A")
	f.b = f.root.Intermediate(t, "seed certificate B")
	for i := 1; i <= 5; i++ {
		ca := f.a
		if i > 3 {
			ca = f.b
		}
		f.devices = append(f.devices, b.MintDevice(t, ca, fmt.Sprintf("device-%d", i)))
	}
	return f
}

// outcomes provisions every device and returns, per device, "assigned" or
// the refusal's reason string.
func outcomes(t *testing.T, b *brokertest.Broker, devs []*pkitest.Leaf) []string {
	t.Helper()
	out := make([]string, len(devs))
	for i, d := range devs {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		st, err := b.Provision(ctx, d)
		cancel()
		var ce *brokertest.ConnectError
		switch {
		case err == nil && st.Status == wire.StatusAssigned:
			out[i] = "assigned"
		case err == nil:
			out[i] = string(st.Status)
		case errors.As(err, &ce):
			out[i] = ce.Reason
		default:
			t.Fatalf("%s: %v", d.Cert.Subject.CommonName, err)
		}
	}
	return out
}

func runSeedStory(t *testing.T, b *brokertest.Broker) {
	f := newSeedFleet(t, b)
	const (
		ok            = "assigned"
		noEnrollment  = "401002 no enrollment for this certificate"
		groupDisabled = "401002 enrollment group disabled"
		devDisabled   = "401002 enrollment disabled"
	)
	stages := []struct {
		name  string
		apply func()
		want  []string
	}{
		{"nothing enrolled", func() {}, []string{noEnrollment, noEnrollment, noEnrollment, noEnrollment, noEnrollment}},
		{"root group enabled", func() { b.EnrollGroup(t, "seed-root", brokertest.GroupCA(f.root)) },
			[]string{ok, ok, ok, ok, ok}},
		{"group B disabled", func() { b.EnrollGroup(t, "seed-b", brokertest.GroupCA(f.b), brokertest.GroupDisabled()) },
			[]string{ok, ok, ok, groupDisabled, groupDisabled}},
		{"device 3 disabled", func() { b.DisableDevice(t, f.devices[2]) },
			[]string{ok, ok, devDisabled, groupDisabled, groupDisabled}},
	}
	for _, st := range stages {
		st.apply()
		got := outcomes(t, b, f.devices)
		for i := range got {
			if got[i] != st.want[i] {
				t.Errorf("%s: device-%d: got %q, want %q", st.name, i+1, got[i], st.want[i])
			}
		}
	}
}

// TestSeedStory runs the origin story end to end over mTLS with paho
// clients, on the embedded store and on Redis.
func TestSeedStory(t *testing.T) {
	t.Run("embedded", func(t *testing.T) {
		runSeedStory(t, brokertest.New(t))
	})
	t.Run("redis", func(t *testing.T) {
		r := redistest.Start(t)
		runSeedStory(t, brokertest.New(t, brokertest.WithRedis(r.Addr(), 0)))
	})
}
