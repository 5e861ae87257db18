package hooks_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"sync/atomic"
	"testing"
	"time"

	dpsdevice "github.com/dpsbroker/dpsbroker/clients/device"
	"github.com/dpsbroker/dpsbroker/clients/tpm"
	"github.com/dpsbroker/dpsbroker/provisioning"
	redisstore "github.com/dpsbroker/dpsbroker/provisioning/store/redis"
	"github.com/dpsbroker/dpsbroker/provisioning/store/redistest"
	"github.com/dpsbroker/dpsbroker/provisioning/tpmattest"
)

// TestTPMAcrossBrokers challenges on one broker and answers on another,
// both on one real Redis: the challenge store is what they share, and
// taking a challenge is atomic across them.
func TestTPMAcrossBrokers(t *testing.T) {
	srv := redistest.Start(t)
	db := srv.NewDB(t)
	open := func() provisioning.Store {
		st, err := redisstore.New(context.Background(), redisstore.Options{Addr: srv.Addr(), DB: db, IDScope: testScope})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = st.Close() })
		return st
	}
	a, b := newEnvStore(t, open(), fastPolls, manyRegisters), newEnvStore(t, open(), fastPolls, manyRegisters)
	d, _ := simTPM(t, 10, tpm.ECC)
	id := d.RegistrationID()
	a.enrollTPM(id, d.EndorsementKey(), provisioning.StatusEnabled)

	t.Run("raw: challenge on A, answer on B, replay on A", func(t *testing.T) {
		body := answer(t, d, a.tpmConn(t, id, "").challenge(keysOf(d)), id)
		if r := b.tpmConn(t, id, "").register(body); r.status != 202 {
			t.Fatalf("answer on B: %d %s", r.status, r.body)
		}
		wantCode(t, a.tpmConn(t, id, "").register(body), tpmattest.CodeNoChallenge)
	})

	t.Run("device reconnects to the other broker with the SAS as password", func(t *testing.T) {
		roots := x509.NewCertPool()
		roots.AddCert(a.serverCA.Cert)
		roots.AddCert(b.serverCA.Cert)
		cfg := a.deviceConfig(d)
		cfg.TLSConfig = &tls.Config{RootCAs: roots, ServerName: "localhost"}
		cfg.AnswerOnReconnect = true
		var dials atomic.Int32
		cfg.Dialer = func(ctx context.Context, network, _ string) (net.Conn, error) {
			target := b.addr
			if dials.Add(1) == 1 {
				target = a.addr
			}
			return (&net.Dialer{}).DialContext(ctx, network, target)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		res, err := dpsdevice.Provision(ctx, cfg)
		checkTPMAssigned(t, res, err, id)
		if n := dials.Load(); n != 2 {
			t.Fatalf("%d connections, want 2", n)
		}
	})
}
