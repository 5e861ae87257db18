package broker

import (
	"context"
	"errors"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/dpsbroker/dpsbroker/provisioning"
)

// readyProbeID is an operation ID that never exists: reading it is one
// store round trip that must answer "not found".
const readyProbeID = "dpsbroker-readiness-probe"

// opsHandler serves the unauthenticated operations endpoints:
//
//	/healthz  200 while the process serves (liveness)
//	/readyz   200 when the store answers and the broker is not draining
//	          (readiness: take the node out of the load balancer otherwise)
//	/metrics  Prometheus metrics
//
// None of them reveals enrollments, devices or secrets. With Config.Pprof
// it also serves /debug/pprof/ (net/http/pprof), which does reveal
// internals and is off by default.
func (b *Broker) opsHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if err := b.Ready(r.Context()); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte(err.Error() + "\n"))
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	mux.Handle("GET /metrics", b.metrics.handler())
	if b.cfg.Pprof {
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	return mux
}

// ErrDraining is returned by Ready once shutdown has begun.
var ErrDraining = errors.New("draining: shutting down")

// Ready reports whether the broker should receive new devices: it is not
// shutting down and its store answers within two seconds.
func (b *Broker) Ready(ctx context.Context) error {
	if b.draining.Load() {
		return ErrDraining
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	_, err := b.store.GetOperation(ctx, readyProbeID)
	if err == nil || errors.Is(err, provisioning.ErrNotFound) {
		return nil
	}
	return errors.New("store unavailable")
}
