// Package load runs bounded provisioning load against DPS brokers and
// measures it: rate, latency distribution, errors by reason, and the CPU
// that the server(s), the load generator and everything else used during
// the measured window.
package load

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dpsbroker/dpsbroker/cmd/dpsload/internal/mqttraw"
)

// Target is one broker endpoint.
type Target struct {
	// Addr is host:port of the MQTT-over-TLS listener.
	Addr string
	// TLS is the client configuration (trust, server name, curves);
	// the device certificate and session cache are set per connection.
	TLS *tls.Config
}

// Config is one run.
type Config struct {
	// Label names the run in progress lines and results ("target", "baseline").
	Label string
	// Round numbers interleaved rounds (0 for a single run).
	Round int
	// Targets receive operations round-robin.
	Targets []Target
	// Devices are used one at a time each; there must be at least
	// Concurrency of them.
	Devices []*Device
	// IDScope goes into every username.
	IDScope string
	// MQTTVersion is mqttraw.V311 or mqttraw.V5.
	MQTTVersion byte
	// Concurrency is the number of provisionings in flight at most.
	Concurrency int
	// Rate > 0 starts provisionings at this rate per second (open loop;
	// latency is measured from the scheduled start, so a broker that falls
	// behind shows it). 0: each worker starts the next one when its last
	// one ends (closed loop).
	Rate float64
	// Count bounds the number of provisionings started (0: no bound).
	Count int
	// Warmup is excluded from the measurement; Duration is the measured
	// window after it (0: until Count provisionings are done).
	Warmup, Duration time.Duration
	// PollAfter overrides the broker's retry-after before a poll
	// (negative: wait what the broker says).
	PollAfter time.Duration
	// MaxPolls bounds the polls of one provisioning.
	MaxPolls int
	// Timeout bounds one whole provisioning.
	Timeout time.Duration
	// Resume lets devices resume their previous TLS session.
	Resume bool
	// Server samples the server side's CPU and memory (nil: not measured).
	Server Probe
	// Peers samples processes loaded on purpose in the same window (another
	// load generator and its server), whose CPU is then neither the
	// server's nor counted as the host's noise (nil: none). Use a
	// PeerProbe, which tolerates a peer that exits first; it is sampled
	// every peerRefresh during the window.
	Peers Probe
	// Progress receives one line per second (nil: none).
	Progress io.Writer
}

func (c *Config) validate() error {
	var errs []error
	if len(c.Targets) == 0 {
		errs = append(errs, errors.New("no target"))
	}
	if c.Concurrency < 1 {
		errs = append(errs, errors.New("concurrency must be at least 1"))
	}
	if len(c.Devices) < c.Concurrency {
		errs = append(errs, fmt.Errorf("%d devices for concurrency %d: a device is used by one connection at a time", len(c.Devices), c.Concurrency))
	}
	if c.Count <= 0 && c.Duration <= 0 {
		errs = append(errs, errors.New("unbounded: give a count or a duration"))
	}
	if c.MQTTVersion != mqttraw.V311 && c.MQTTVersion != mqttraw.V5 {
		errs = append(errs, fmt.Errorf("MQTT protocol level %d (4 or 5)", c.MQTTVersion))
	}
	if c.Timeout <= 0 {
		errs = append(errs, errors.New("timeout must be positive"))
	}
	if c.Rate < 0 || c.Warmup < 0 || c.Duration < 0 || c.Count < 0 {
		errs = append(errs, errors.New("negative rate, warmup, duration or count"))
	}
	return errors.Join(errs...)
}

type runner struct {
	cfg     Config
	stats   *stats
	free    chan *Device
	next    atomic.Uint64 // target selector
	started atomic.Int64
}

// Run performs one bounded run. It returns an error only when the run
// could not take place; failed provisionings are counted in the result.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	if cfg.MaxPolls <= 0 {
		cfg.MaxPolls = 20
	}
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("load: %w", err)
	}
	r := &runner{cfg: cfg, stats: newStats(), free: make(chan *Device, len(cfg.Devices))}
	for _, d := range cfg.Devices {
		r.free <- d
	}

	// opCtx ends the provisionings still in flight when the window closes:
	// they would not be counted, and waiting for them would only make the
	// run longer.
	opCtx, cancelOps := context.WithCancel(ctx)
	defer cancelOps()
	start := time.Now()
	windowStart := start.Add(cfg.Warmup)
	var deadline time.Time
	if cfg.Duration > 0 {
		deadline = windowStart.Add(cfg.Duration)
	}
	r.stats.setWindow(windowStart, deadline)

	stop := make(chan struct{}) // closed: start no more provisionings
	var stopOnce sync.Once
	stopNow := func() { stopOnce.Do(func() { close(stop) }) }

	arrivals := make(chan time.Time, cfg.Concurrency)
	var wg sync.WaitGroup
	if cfg.Rate > 0 {
		wg.Go(func() { r.dispatch(start, arrivals, stop) })
	}
	var workers sync.WaitGroup
	for range cfg.Concurrency {
		workers.Go(func() { r.work(opCtx, arrivals, stop) })
	}
	allDone := make(chan struct{})
	go func() { workers.Wait(); close(allDone) }()

	progressDone := make(chan struct{})
	if cfg.Progress != nil {
		go r.progress(start, stop, progressDone)
	} else {
		close(progressDone)
	}

	res := &Result{Label: cfg.Label, Round: cfg.Round, Started: start, Concurrency: cfg.Concurrency, TargetRate: cfg.Rate, Mode: "closed"}
	if cfg.Rate > 0 {
		res.Mode = "open"
	}
	for _, t := range cfg.Targets {
		res.Targets = append(res.Targets, t.Addr)
	}

	// Window start: wait out the warmup (unless everything ended in it).
	select {
	case <-time.After(time.Until(windowStart)):
	case <-allDone:
	case <-ctx.Done():
	}
	begin := takeSnapshot(ctx, cfg.Server, cfg.Peers)
	peersDone := make(chan struct{})
	if cfg.Peers != nil {
		// Keep the peers' readings fresh: a peer whose window ends a few
		// milliseconds before this one's may exit before the last snapshot
		// (PeerProbe then counts its last reading).
		go func() {
			t := time.NewTicker(peerRefresh)
			defer t.Stop()
			for {
				select {
				case <-t.C:
					_, _ = cfg.Peers.Sample(ctx)
				case <-peersDone:
					return
				}
			}
		}()
	}
	var endTimer <-chan time.Time
	if !deadline.IsZero() {
		endTimer = time.After(time.Until(deadline))
	}
	select {
	case <-endTimer:
	case <-allDone:
	case <-ctx.Done():
	}
	close(peersDone)
	end := takeSnapshot(ctx, cfg.Server, cfg.Peers)
	stopNow()
	cancelOps()
	wg.Wait()
	<-allDone
	<-progressDone

	r.stats.fill(res, begin, end, cfg.Server, cfg.Peers)
	if ctx.Err() != nil {
		return res, ctx.Err()
	}
	return res, nil
}

// dispatch schedules open-loop arrivals at the configured rate. When every
// worker is busy it blocks, and the waiting shows in the latency (measured
// from the scheduled time), never as a silently lower offered rate.
func (r *runner) dispatch(start time.Time, arrivals chan<- time.Time, stop <-chan struct{}) {
	defer close(arrivals)
	interval := time.Duration(float64(time.Second) / r.cfg.Rate)
	for i := int64(0); ; i++ {
		if r.cfg.Count > 0 && i >= int64(r.cfg.Count) {
			return
		}
		at := start.Add(time.Duration(i) * interval)
		if d := time.Until(at); d > 0 {
			select {
			case <-time.After(d):
			case <-stop:
				return
			}
		}
		select {
		case arrivals <- at:
		case <-stop:
			return
		}
	}
}

func (r *runner) work(ctx context.Context, arrivals <-chan time.Time, stop <-chan struct{}) {
	for {
		var scheduled time.Time
		if r.cfg.Rate > 0 {
			var ok bool
			select {
			case scheduled, ok = <-arrivals:
				if !ok {
					return
				}
			case <-stop:
				return
			}
		} else {
			select {
			case <-stop:
				return
			default:
			}
			if r.cfg.Count > 0 && r.started.Add(1) > int64(r.cfg.Count) {
				return
			}
		}
		if ctx.Err() != nil {
			return
		}
		dev := <-r.free
		tgt := &r.cfg.Targets[int(r.next.Add(1)-1)%len(r.cfg.Targets)]
		begin := time.Now()
		if scheduled.IsZero() {
			scheduled = begin
		}
		out, err := r.provision(ctx, dev, tgt, begin.Add(r.cfg.Timeout))
		ended := time.Now()
		r.free <- dev
		if err != nil && ctx.Err() != nil {
			return // cut off at the end of the window: not a broker error
		}
		r.stats.record(scheduled, ended, out, err)
	}
}
