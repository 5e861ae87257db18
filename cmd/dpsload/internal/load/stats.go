package load

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/dpsbroker/dpsbroker/cmd/dpsload/internal/hist"
	"github.com/dpsbroker/dpsbroker/cmd/dpsload/internal/sysstat"
)

// NoisyOtherCores is the CPU, in cores, used during the window by neither
// the server nor the load generator above which a run is flagged noisy
// (perf-baselines.md excludes such runs).
const NoisyOtherCores = 0.12

// Probe samples the server side's cumulative CPU and resident memory.
type Probe interface {
	Sample(ctx context.Context) (sysstat.ProcSample, error)
	Source() string
}

// PIDProbe sums /proc figures over processes (brokers, Redis, ...).
type PIDProbe []int

// Sample implements Probe.
func (p PIDProbe) Sample(context.Context) (sysstat.ProcSample, error) {
	var s sysstat.ProcSample
	for _, pid := range p {
		x, err := sysstat.ReadProc(pid)
		if err != nil {
			return s, fmt.Errorf("pid %d: %w", pid, err)
		}
		s.CPU += x.CPU
		s.RSS += x.RSS
	}
	return s, nil
}

// Source implements Probe.
func (p PIDProbe) Source() string { return fmt.Sprintf("/proc pids %v", []int(p)) }

// peerRefresh is how often Config.Peers is read during the window.
const peerRefresh = 200 * time.Millisecond

// PeerProbe sums the CPU of processes loaded alongside on purpose (another
// generator and its broker). Peers started together end together, but one
// may exit a few milliseconds before the other takes its last reading: an
// exited peer counts with the CPU of its last reading (at most peerRefresh
// old) instead of failing the measurement. A peer never read is an error.
type PeerProbe struct {
	pids []int
	mu   sync.Mutex
	last map[int]time.Duration
}

// NewPeerProbe returns a probe of pids.
func NewPeerProbe(pids []int) *PeerProbe {
	return &PeerProbe{pids: pids, last: make(map[int]time.Duration, len(pids))}
}

// Sample implements Probe (CPU only).
func (p *PeerProbe) Sample(context.Context) (sysstat.ProcSample, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var s sysstat.ProcSample
	for _, pid := range p.pids {
		if x, err := sysstat.ReadProc(pid); err == nil {
			p.last[pid] = x.CPU
		} else if _, seen := p.last[pid]; !seen {
			return s, fmt.Errorf("peer pid %d: %w", pid, err)
		}
		s.CPU += p.last[pid]
	}
	return s, nil
}

// Source implements Probe.
func (p *PeerProbe) Source() string { return fmt.Sprintf("/proc peer pids %v", p.pids) }

// MetricsProbe sums process_cpu_seconds_total and
// process_resident_memory_bytes over Prometheus endpoints.
type MetricsProbe struct {
	URLs   []string
	Client *http.Client
}

// Sample implements Probe.
func (p MetricsProbe) Sample(ctx context.Context) (sysstat.ProcSample, error) {
	var s sysstat.ProcSample
	for _, u := range p.URLs {
		x, err := sysstat.ScrapeProcess(ctx, p.Client, u)
		if err != nil {
			return s, err
		}
		s.CPU += x.CPU
		s.RSS += x.RSS
	}
	return s, nil
}

// Source implements Probe.
func (p MetricsProbe) Source() string { return "metrics " + strings.Join(p.URLs, ",") }

// snapshot is every counter at one edge of the window.
type snapshot struct {
	at        time.Time
	server    sysstat.ProcSample
	serverErr error
	self      time.Duration
	selfErr   error
	machine   sysstat.MachineSample
	machErr   error
	peers     sysstat.ProcSample
	peersErr  error
}

func takeSnapshot(ctx context.Context, p, peers Probe) snapshot {
	s := snapshot{}
	if p != nil {
		sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		s.server, s.serverErr = p.Sample(sctx)
		cancel()
	}
	if peers != nil {
		sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		s.peers, s.peersErr = peers.Sample(sctx)
		cancel()
	}
	s.self, s.selfErr = sysstat.SelfCPU()
	s.machine, s.machErr = sysstat.ReadMachine()
	s.at = time.Now()
	return s
}

// stats collects outcomes from the workers.
type stats struct {
	mu          sync.Mutex
	windowStart time.Time
	deadline    time.Time

	window   *hist.Histogram
	interval *hist.Histogram
	// fromConnect holds, for the window's successes, CONNECT to assigned.
	fromConnect *hist.Histogram
	ok, errs    int64 // in the window
	errsBy      map[string]int64
	samples     map[string]string
	polls       int64
	fast        int64
	curves      map[string]int64
	resumed     int64

	totalOK, totalErr int64 // whole run, warmup included
	intOK, intErr     int64 // since the last progress line
}

func newStats() *stats {
	return &stats{
		window: hist.New(), interval: hist.New(), fromConnect: hist.New(),
		errsBy: map[string]int64{}, samples: map[string]string{}, curves: map[string]int64{},
	}
}

func (s *stats) setWindow(start, deadline time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.windowStart, s.deadline = start, deadline
}

// record counts one provisioning. It belongs to the window when it was
// scheduled inside it and ended before the window closed.
func (s *stats) record(scheduled, ended time.Time, out outcome, err error) {
	lat := ended.Sub(scheduled)
	s.mu.Lock()
	defer s.mu.Unlock()
	inWindow := !scheduled.Before(s.windowStart) && (s.deadline.IsZero() || !ended.After(s.deadline))
	if err != nil {
		s.totalErr++
		s.intErr++
		if inWindow {
			s.errs++
			reason, msg := "error", err.Error()
			var oe *opError
			if errors.As(err, &oe) {
				reason, msg = oe.reason, oe.err.Error()
			}
			s.errsBy[reason]++
			if _, ok := s.samples[reason]; !ok {
				s.samples[reason] = msg
			}
		}
		return
	}
	s.totalOK++
	s.intOK++
	s.interval.Record(lat)
	if !inWindow {
		return
	}
	s.ok++
	s.window.Record(lat)
	s.fromConnect.Record(out.fromConnect)
	s.polls += int64(out.polls)
	if out.fast {
		s.fast++
	}
	s.curves[curveName(out.curve)]++
	if out.resumed {
		s.resumed++
	}
}

func curveName(c tls.CurveID) string {
	if c == 0 {
		return "none (TLS 1.2 resumption or unknown)"
	}
	return c.String()
}

// progress prints one line per second until stop.
func (r *runner) progress(start time.Time, stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	t := time.NewTicker(time.Second)
	defer t.Stop()
	last := start
	for {
		select {
		case <-stop:
			return
		case now := <-t.C:
			s := r.stats
			s.mu.Lock()
			ok, bad := s.intOK, s.intErr
			p50, p99 := s.interval.Quantile(0.5), s.interval.Quantile(0.99)
			s.intOK, s.intErr = 0, 0
			s.interval.Reset()
			phase := "measure"
			if last.Before(s.windowStart) { // the second that just ended began in the warmup
				phase = "warmup"
			}
			totalOK, totalErr := s.totalOK, s.totalErr
			s.mu.Unlock()
			secs := now.Sub(last).Seconds()
			last = now
			label := r.cfg.Label
			if r.cfg.Round > 0 {
				label = fmt.Sprintf("%s#%d", label, r.cfg.Round)
			}
			_, _ = fmt.Fprintf(r.cfg.Progress, "dpsload %-12s %4.0fs %-7s %7.0f/s  ok %-8d err %-6d (+%d)  p50 %7.2fms  p99 %7.2fms\n",
				label, now.Sub(start).Seconds(), phase, float64(ok)/secs, totalOK, totalErr, bad, ms(p50), ms(p99))
		}
	}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// Latency summarises a latency distribution in milliseconds.
type Latency struct {
	Count   uint64        `json:"count"`
	MinMs   float64       `json:"minMs"`
	MeanMs  float64       `json:"meanMs"`
	P50Ms   float64       `json:"p50Ms"`
	P90Ms   float64       `json:"p90Ms"`
	P99Ms   float64       `json:"p99Ms"`
	P999Ms  float64       `json:"p999Ms"`
	MaxMs   float64       `json:"maxMs"`
	Buckets []hist.Bucket `json:"buckets,omitempty"`
}

// CPU is one side's CPU use in the window.
type CPU struct {
	Source string `json:"source,omitempty"`
	// Seconds of CPU (all threads) used in the window.
	Seconds float64 `json:"cpuSeconds"`
	// Cores is Seconds over the window length.
	Cores float64 `json:"cores"`
	// PerRegistrationUs is CPU microseconds per completed provisioning:
	// for the server, what sets its capacity when it has the cores alone.
	PerRegistrationUs float64 `json:"cpuPerRegistrationUs,omitempty"`
	// RSS at the start and end of the window (server only).
	RSSStartBytes uint64 `json:"rssStartBytes,omitempty"`
	RSSEndBytes   uint64 `json:"rssEndBytes,omitempty"`
	Error         string `json:"error,omitempty"`
}

// MachineCPU is the whole machine in the window.
type MachineCPU struct {
	BusyCores float64 `json:"busyCores"`
	// PeerCores is the CPU of the peer processes (Config.Peers): load
	// measured on purpose in the same window, so not counted as other.
	PeerCores float64 `json:"peerCores,omitempty"`
	// OtherCores is busy CPU that was neither the server's (as far as the
	// probe sees it), the load generator's nor the peers': other tenants,
	// interrupts.
	OtherCores float64 `json:"otherCores"`
	// Noisy is set when OtherCores exceeds NoisyOtherCores: compare such a
	// run with care, or repeat it.
	Noisy bool   `json:"noisy"`
	Error string `json:"error,omitempty"`
}

// Result is the outcome of one run.
type Result struct {
	Label         string    `json:"label"`
	Round         int       `json:"round,omitempty"`
	Started       time.Time `json:"started"`
	Targets       []string  `json:"targets"`
	Mode          string    `json:"mode"` // closed or open loop
	Concurrency   int       `json:"concurrency"`
	TargetRate    float64   `json:"targetRate,omitempty"`
	WindowSeconds float64   `json:"windowSeconds"`
	// Completed provisionings (assigned) in the window, and their rate.
	Completed int64   `json:"completed"`
	Rate      float64 `json:"rate"`
	// Errors in the window, by reason: "connack:0x87:401002",
	// "dps:401:401002", "dps:failed:400208", "timeout:tls", "closed:register", ...
	Errors         int64             `json:"errors"`
	ErrorsByReason map[string]int64  `json:"errorsByReason"`
	ErrorSamples   map[string]string `json:"errorSamples,omitempty"`
	// Totals over the whole run, warmup and window edges included.
	TotalCompleted int64 `json:"totalCompleted"`
	TotalErrors    int64 `json:"totalErrors"`
	// Latency runs from the scheduled start (open loop) or the TCP dial
	// (closed loop) to the final answer: TCP, TLS, MQTT and every poll.
	Latency Latency `json:"latency"`
	// FromConnect runs from sending CONNECT to reading "assigned": the
	// part after the TLS handshake.
	FromConnect Latency `json:"latencyFromConnect"`
	// Polls sent in the window, and registrations answered 200 at once.
	Polls         int64            `json:"polls"`
	FastAssigned  int64            `json:"fastAssigned"`
	Curves        map[string]int64 `json:"curves"`
	TLSResumed    int64            `json:"tlsResumed"`
	Server        *CPU             `json:"server,omitempty"`
	LoadGenerator CPU              `json:"loadGenerator"`
	Machine       MachineCPU       `json:"machine"`
}

func (s *stats) fill(res *Result, begin, end snapshot, probe, peers Probe) {
	s.mu.Lock()
	defer s.mu.Unlock()
	win := end.at.Sub(begin.at).Seconds()
	res.WindowSeconds = win
	res.Completed, res.Errors = s.ok, s.errs
	if win > 0 {
		res.Rate = float64(s.ok) / win
	}
	res.ErrorsByReason = s.errsBy
	if len(s.samples) > 0 {
		res.ErrorSamples = s.samples
	}
	res.TotalCompleted, res.TotalErrors = s.totalOK, s.totalErr
	res.Latency, res.FromConnect = summary(s.window), summary(s.fromConnect)
	res.Polls, res.FastAssigned, res.Curves, res.TLSResumed = s.polls, s.fast, s.curves, s.resumed

	perOp := func(d time.Duration) float64 {
		if s.ok == 0 {
			return 0
		}
		return float64(d) / float64(time.Microsecond) / float64(s.ok)
	}
	cores := func(d time.Duration) float64 {
		if win <= 0 {
			return 0
		}
		return d.Seconds() / win
	}
	var serverCPU time.Duration
	if probe != nil {
		if err := errors.Join(begin.serverErr, end.serverErr); err != nil {
			res.Server = &CPU{Source: probe.Source(), Error: err.Error()}
		} else {
			serverCPU = end.server.CPU - begin.server.CPU
			res.Server = &CPU{
				Source:  probe.Source(),
				Seconds: serverCPU.Seconds(), Cores: cores(serverCPU), PerRegistrationUs: perOp(serverCPU),
				RSSStartBytes: begin.server.RSS, RSSEndBytes: end.server.RSS,
			}
		}
	}
	if err := errors.Join(begin.selfErr, end.selfErr); err != nil {
		res.LoadGenerator.Error = err.Error()
	} else {
		d := end.self - begin.self
		res.LoadGenerator = CPU{Seconds: d.Seconds(), Cores: cores(d), PerRegistrationUs: perOp(d)}
	}
	if err := errors.Join(begin.machErr, end.machErr); err != nil {
		res.Machine.Error = err.Error()
	} else {
		busy := end.machine.Busy - begin.machine.Busy
		var peerCPU time.Duration
		if peers != nil {
			if err := errors.Join(begin.peersErr, end.peersErr); err != nil {
				// A peer that could not be read (gone before the window
				// began) makes the split unknown: say so rather than count
				// its CPU as the host's noise.
				res.Machine.Error = "peers: " + err.Error()
			} else {
				peerCPU = end.peers.CPU - begin.peers.CPU
				res.Machine.PeerCores = cores(peerCPU)
			}
		}
		res.Machine.BusyCores = cores(busy)
		res.Machine.OtherCores = max(0, cores(busy-serverCPU-(end.self-begin.self)-peerCPU))
		res.Machine.Noisy = res.Machine.OtherCores > NoisyOtherCores || res.Machine.Error != ""
	}
}

func summary(h *hist.Histogram) Latency {
	return Latency{
		Count: h.Count(), MinMs: ms(h.Min()), MeanMs: ms(h.Mean()),
		P50Ms: ms(h.Quantile(0.5)), P90Ms: ms(h.Quantile(0.9)), P99Ms: ms(h.Quantile(0.99)),
		P999Ms: ms(h.Quantile(0.999)), MaxMs: ms(h.Max()), Buckets: h.Buckets(),
	}
}

// ReasonKeys returns the error reasons sorted by count, for printing.
func (r *Result) ReasonKeys() []string {
	keys := make([]string, 0, len(r.ErrorsByReason))
	for k := range r.ErrorsByReason {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		a, b := r.ErrorsByReason[keys[i]], r.ErrorsByReason[keys[j]]
		if a != b {
			return a > b
		}
		return keys[i] < keys[j]
	})
	return keys
}
