package broker

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/dpsbroker/dpsbroker/provisioning"
)

// metrics are the broker's Prometheus collectors. Each Broker has its own
// registry, so that several brokers in one process (tests) do not collide.
type metrics struct {
	reg *prometheus.Registry

	connAccepts  *prometheus.CounterVec
	connRejects  *prometheus.CounterVec
	connOpen     *prometheus.GaugeVec
	events       *prometheus.CounterVec
	decision     *prometheus.HistogramVec
	storeCalls   *prometheus.HistogramVec
	disconnected *prometheus.CounterVec
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		connAccepts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "dpsbroker", Name: "connections_accepted_total",
			Help: "TCP connections admitted, by listener.",
		}, []string{"listener"}),
		connRejects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "dpsbroker", Name: "connections_rejected_total",
			Help: "TCP connections closed at accept time, by listener and reason (max_connections, max_connections_per_ip, shutting_down).",
		}, []string{"listener", "reason"}),
		connOpen: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "dpsbroker", Name: "connections_open",
			Help: "Open TCP connections, by listener (including those still in the TLS handshake).",
		}, []string{"listener"}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "dpsbroker", Name: "provisioning_events_total",
			Help: "Provisioning results, by outcome (assigned, refused, failed), attestation type and DPS error code (0 when assigned).",
		}, []string{"outcome", "attestation", "code"}),
		decision: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "dpsbroker", Name: "decision_seconds",
			Help:    "Time to decide a device's attestation (chain walk and enrollment lookups), by result.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1},
		}, []string{"result"}),
		storeCalls: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "dpsbroker", Name: "store_call_seconds",
			Help:    "Store round trips, by operation and result (ok, not_found, error).",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1},
		}, []string{"op", "result"}),
		disconnected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "dpsbroker", Name: "sessions_disconnected_total",
			Help: "Change notifications that disconnected live sessions, by entry kind (enrollment, group, all).",
		}, []string{"kind"}),
	}
	m.reg.MustRegister(
		m.connAccepts, m.connRejects, m.connOpen, m.events, m.decision, m.storeCalls, m.disconnected,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

// meter wraps st for the store_call_seconds histogram and, when st has a
// registration journal (the embedded store), registers the journal series.
func (m *metrics) meter(st provisioning.Store) *meteredStore {
	if js, ok := st.(journalSource); ok && js.JournalStats().Enabled {
		m.reg.MustRegister(newJournalCollector(js))
	}
	return &meteredStore{Store: st, m: m}
}

func (m *metrics) connAccepted(listener string) {
	m.connAccepts.WithLabelValues(listener).Inc()
	m.connOpen.WithLabelValues(listener).Inc()
}

func (m *metrics) connClosed(listener string) { m.connOpen.WithLabelValues(listener).Dec() }

func (m *metrics) connRejected(listener, reason string) {
	m.connRejects.WithLabelValues(listener, reason).Inc()
}

// event counts a provisioning result. Labels stay low-cardinality: the
// error code, never the free-text reason or the registration ID.
func (m *metrics) event(ev *provisioning.Event) {
	att := string(ev.AttestationType)
	if att == "" {
		att = "unknown"
	}
	m.events.WithLabelValues(string(ev.Type), att, strconv.Itoa(ev.ErrorCode)).Inc()
}

func (m *metrics) observeDecision(result string, d time.Duration) {
	m.decision.WithLabelValues(result).Observe(d.Seconds())
}

func (m *metrics) observeStore(op string, err error, d time.Duration) {
	m.storeCalls.WithLabelValues(op, storeResult(err)).Observe(d.Seconds())
}

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}
