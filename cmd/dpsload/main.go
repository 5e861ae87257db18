package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/dpsbroker/dpsbroker/cmd/internal/stats"

	"github.com/dpsbroker/dpsbroker/clients/service"
	"github.com/dpsbroker/dpsbroker/cmd/dpsload/internal/fleet"
	"github.com/dpsbroker/dpsbroker/cmd/dpsload/internal/load"
	"github.com/dpsbroker/dpsbroker/cmd/dpsload/internal/sysstat"
	"github.com/dpsbroker/dpsbroker/provisioning/pkitest"
)

// defaultIDScope is dpsbroker's default ID scope (broker.DefaultIDScope),
// repeated here so that the load generator does not link the broker.
const defaultIDScope = "0ne00000000"

// Exit statuses.
const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr, os.LookupEnv)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer, env func(string) (string, bool)) int {
	// Progress lines, the child broker's stderr and the main flow write
	// concurrently.
	stdout, stderr = &syncWriter{w: stdout}, &syncWriter{w: stderr}
	if len(args) > 0 && args[0] == "serve-baseline" {
		return serveBaseline(ctx, args[1:], stdout, stderr)
	}
	if len(args) > 0 && args[0] == "hold" {
		return hold(ctx, args[1:], stdout, stderr, env)
	}
	var o options
	fs := newFlagSet(&o)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "dpsload: unexpected argument %q\n", fs.Arg(0))
		return exitUsage
	}
	fs.Visit(func(f *flag.Flag) { o.warmupSet = o.warmupSet || f.Name == "warmup" })
	if err := o.validate(); err != nil {
		fmt.Fprintf(stderr, "dpsload: %v\n", err)
		return exitUsage
	}
	if err := loadRun(ctx, &o, args, stdout, stderr, env); err != nil {
		fmt.Fprintf(stderr, "dpsload: %v\n", err)
		return exitError
	}
	return exitOK
}

const usage = `Usage:
  dpsload [flags]                  provision devices against brokers, measure, report
  dpsload serve-baseline [flags]   run the baseline broker alone (for --baseline-broker)
  dpsload hold [flags]             hold idle device connections in steps; read the server's memory at each

Run "go doc github.com/dpsbroker/dpsbroker/cmd/dpsload" for examples.

Flags:
`

// syncWriter serialises writes to w.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

// File is the JSON result file.
type File struct {
	Tool     string           `json:"tool"`
	Args     []string         `json:"args"`
	Started  time.Time        `json:"started"`
	Machine  sysstat.Machine  `json:"machine"`
	Settings Settings         `json:"settings"`
	Runs     []*load.Result   `json:"runs"`
	Compare  *Comparison      `json:"compare,omitempty"`
	Summary  map[string]Stats `json:"summary"`
}

// Settings records what shaped the numbers.
type Settings struct {
	MQTT        int     `json:"mqtt"`
	Curves      string  `json:"curves"`
	Resume      bool    `json:"resume"`
	Concurrency int     `json:"concurrency"`
	Rate        float64 `json:"rate,omitempty"`
	Count       int     `json:"count,omitempty"`
	Duration    string  `json:"duration,omitempty"`
	Warmup      string  `json:"warmup"`
	PollAfter   string  `json:"pollAfter"`
	Devices     int     `json:"devices"`
	Individual  bool    `json:"individual,omitempty"`
	BaselineKex string  `json:"baselineKex,omitempty"`
}

func loadRun(ctx context.Context, o *options, args []string, stdout, stderr io.Writer, env func(string) (string, bool)) error {
	if len(o.brokers) == 0 {
		o.brokers = listFlag{"127.0.0.1:8883"}
	}
	if !o.warmupSet && o.duration == 0 {
		o.warmup = 0 // a count-bounded run measures everything it does
	}
	o.tokenFromEnv(env)
	if err := o.checkTargets(); err != nil {
		return err
	}

	// Everything below up to the first run is preparation: not measured.
	var roots *x509.CertPool
	if o.caFile != "" {
		pem, err := os.ReadFile(o.caFile)
		if err != nil {
			return err
		}
		roots = x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			return fmt.Errorf("--ca-file %s: no PEM certificate", o.caFile)
		}
	}
	pki, err := o.devicePKI()
	if err != nil {
		return err
	}
	var admin *service.Client
	if o.admin != "" && o.usesTarget() {
		if o.token == "" {
			return errors.New("--admin needs a token: --token, $DPSLOAD_ADMIN_TOKEN or $DPSBROKER_ADMIN_TOKEN")
		}
		hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
		admin = service.New(o.admin, o.token, hc)
		if err := pki.Enroll(ctx, admin, o.groupID); err != nil {
			return err
		}
		fmt.Fprintf(stderr, "dpsload: enrolled group %q for a fresh device CA\n", o.groupID)
	}
	nDev := o.devices
	if nDev == 0 {
		nDev = 1000
		if o.count > 0 {
			nDev = min(o.count, 1000)
		}
	}
	nDev = max(nDev, o.concurrency)
	mintStart := time.Now()
	devices, err := pki.Mint(ctx, o.devicePrefix, nDev)
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "dpsload: minted %d device certificates in %v (not measured)\n", nDev, time.Since(mintStart).Round(time.Millisecond))
	if o.individual && o.usesTarget() {
		enrollStart := time.Now()
		if err := fleet.EnrollIndividually(ctx, admin, devices); err != nil {
			return err
		}
		fmt.Fprintf(stderr, "dpsload: enrolled %d devices individually in %v (not measured)\n", nDev, time.Since(enrollStart).Round(time.Millisecond))
	}

	curves, _ := curvePrefs(o.curves)
	base := load.Config{
		IDScope: o.idScope, MQTTVersion: byte(o.mqtt), Concurrency: o.concurrency, Rate: o.rate,
		Count: o.count, Warmup: o.warmup, Duration: o.duration, PollAfter: -1, Timeout: o.timeout,
		Resume: o.resume, Devices: devices,
	}
	if o.pollAfter != "" {
		base.PollAfter, _ = time.ParseDuration(o.pollAfter)
	}
	if !o.quiet {
		base.Progress = stderr
	}

	var target, baseline *load.Config
	if o.usesTarget() {
		c := base
		c.Label = "target"
		for _, b := range o.brokers {
			c.Targets = append(c.Targets, load.Target{Addr: b, TLS: clientTLS(roots, o.serverNameFor(b), curves)})
		}
		switch {
		case len(o.serverPIDs) > 0:
			c.Server = load.PIDProbe(o.serverPIDs)
		case len(o.metrics) > 0:
			c.Server = load.MetricsProbe{URLs: o.metrics, Client: &http.Client{Timeout: 2 * time.Second}}
		}
		target = &c
	}
	if o.usesBaseline() {
		c := base
		c.Label = "baseline"
		addr, pids, bRoots := o.baselineBroker, []int(o.baselinePIDs), roots
		if addr == "" {
			b, err := startBaseline(ctx, o, pki, stderr)
			if err != nil {
				return err
			}
			defer b.stop(stderr)
			addr, pids = b.addr, []int{b.pid}
			if b.roots != nil {
				bRoots = b.roots
			}
		}
		c.Targets = []load.Target{{Addr: addr, TLS: clientTLS(bRoots, o.serverNameFor(addr), curves)}}
		if len(pids) > 0 {
			c.Server = load.PIDProbe(pids)
		}
		baseline = &c
	}

	file := &File{
		Tool: "dpsload", Args: redactArgs(args), Started: time.Now(), Machine: sysstat.Describe(),
		Settings: Settings{
			MQTT: o.mqtt, Curves: o.curves, Resume: o.resume, Concurrency: o.concurrency, Rate: o.rate,
			Count: o.count, Warmup: o.warmup.String(), PollAfter: o.pollAfter, Devices: nDev, Individual: o.individual,
		},
	}
	if file.Settings.PollAfter == "" {
		file.Settings.PollAfter = "retry-after"
	}
	if o.duration > 0 {
		file.Settings.Duration = o.duration.String()
	}
	if baseline != nil && o.baselineBroker == "" {
		file.Settings.BaselineKex = o.baselineKex
	}

	var plan []*load.Config
	switch {
	case o.compare:
		// ABBA order (baseline first in odd rounds, target first in even
		// ones) so that a drift of the host's speed over the session hits
		// both sides alike.
		for r := 1; r <= o.rounds; r++ {
			b, t := *baseline, *target
			b.Round, t.Round = r, r
			if r%2 == 1 {
				plan = append(plan, &b, &t)
			} else {
				plan = append(plan, &t, &b)
			}
		}
	case baseline != nil:
		plan = []*load.Config{baseline}
	default:
		plan = []*load.Config{target}
	}

	var runErr error
	for i, cfg := range plan {
		waitIdle(ctx, o.idleWait, stderr)
		if i == 0 {
			gated, err := (gate{ready: o.readyFile, start: o.startFile, timeout: o.startTimeout}).wait(ctx)
			if err != nil {
				return err
			}
			if peers := append(slices.Clone([]int(o.peerPIDs)), gated...); len(peers) > 0 {
				cfg.Peers = load.NewPeerProbe(peers)
			}
		}
		res, err := load.Run(ctx, *cfg)
		if res != nil {
			file.Runs = append(file.Runs, res)
			printResult(stdout, res)
		}
		if err != nil {
			runErr = err
			break
		}
	}
	file.Summary = summarize(file.Runs)
	if o.compare && runErr == nil {
		file.Compare = compare(file.Summary, file.Runs)
		printComparison(stdout, file.Compare)
	}
	if o.out != "" {
		if err := writeJSON(o.out, file); err != nil {
			return errors.Join(runErr, err)
		}
	}
	return runErr
}

// checkTargets applies the loopback rule to everything dpsload connects to.
func (o *options) checkTargets() error {
	resolve := func(host string) ([]net.IP, error) {
		if ip := net.ParseIP(host); ip != nil {
			return []net.IP{ip}, nil
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return net.DefaultResolver.LookupIP(ctx, "ip", host)
	}
	var errs []error
	if o.usesTarget() {
		for _, b := range o.brokers {
			errs = append(errs, checkLoopback(resolve, o.allowRemote, "--broker", b))
		}
	}
	if o.baselineBroker != "" {
		errs = append(errs, checkLoopback(resolve, o.allowRemote, "--baseline-broker", o.baselineBroker))
	}
	if o.admin != "" && o.usesTarget() {
		h, err := urlHost("--admin", o.admin)
		errs = append(errs, err)
		if err == nil {
			errs = append(errs, checkLoopback(resolve, o.allowRemote, "--admin", h))
		}
	}
	for _, m := range o.metrics {
		h, err := urlHost("--metrics", m)
		errs = append(errs, err)
		if err == nil {
			errs = append(errs, checkLoopback(resolve, o.allowRemote, "--metrics", h))
		}
	}
	return errors.Join(errs...)
}

// devicePKI loads the CA of --ca-cert or creates a fresh one.
func (o *options) devicePKI() (*fleet.PKI, error) {
	if o.caCert == "" {
		return fleet.NewPKI("dpsload " + time.Now().UTC().Format("20060102T150405"))
	}
	certPEM, err := os.ReadFile(o.caCert)
	if err != nil {
		return nil, err
	}
	keyPEM, err := os.ReadFile(o.caKey)
	if err != nil {
		return nil, err
	}
	return fleet.LoadPKI(certPEM, keyPEM)
}

func (o *options) serverNameFor(addr string) string {
	if o.serverName != "" {
		return o.serverName
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil || host == "" {
		return "localhost"
	}
	return host
}

// curvePrefs maps --curves to the client's TLS 1.3 key exchange offer.
func curvePrefs(name string) ([]tls.CurveID, error) {
	switch name {
	case "hybrid":
		// The hybrid first, with X25519 as the fallback Go's default
		// also offers; a broker restricted to X25519 still answers.
		return []tls.CurveID{tls.X25519MLKEM768, tls.X25519}, nil
	case "x25519":
		return []tls.CurveID{tls.X25519}, nil
	case "p256":
		return []tls.CurveID{tls.CurveP256}, nil
	}
	return nil, fmt.Errorf("--curves %q: hybrid, x25519 or p256", name)
}

// clientTLS is a device's TLS: it verifies the broker, as a device must
// (the client pays for that verification too).
func clientTLS(roots *x509.CertPool, serverName string, curves []tls.CurveID) *tls.Config {
	return &tls.Config{RootCAs: roots, ServerName: serverName, MinVersion: tls.VersionTLS12, CurvePreferences: curves}
}

// waitIdle waits, up to limit, for a second in which the machine was under
// 8 % busy, so that each run starts from a quiet machine.
func waitIdle(ctx context.Context, limit time.Duration, stderr io.Writer) {
	if limit <= 0 {
		return
	}
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		a, err := sysstat.ReadMachine()
		if err != nil {
			return
		}
		time.Sleep(time.Second)
		b, err := sysstat.ReadMachine()
		if err != nil {
			return
		}
		if busy := float64(b.Busy-a.Busy) / float64(b.Total-a.Total); busy < 0.08 {
			return
		}
	}
	fmt.Fprintf(stderr, "dpsload: machine still busy after %v; running anyway\n", limit)
}

// redactArgs drops the value of --token from the recorded command line.
func redactArgs(args []string) []string {
	out := make([]string, 0, len(args))
	skip := false
	for _, a := range args {
		switch {
		case skip:
			out = append(out, "REDACTED")
			skip = false
		case a == "--token" || a == "-token":
			out = append(out, a)
			skip = true
		case strings.HasPrefix(a, "--token=") || strings.HasPrefix(a, "-token="):
			out = append(out, a[:strings.IndexByte(a, '=')+1]+"REDACTED")
		default:
			out = append(out, a)
		}
	}
	return out
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func printResult(w io.Writer, r *load.Result) {
	label := r.Label
	if r.Round > 0 {
		label = fmt.Sprintf("%s#%d", r.Label, r.Round)
	}
	fmt.Fprintf(w, "%-12s rate %8.1f/s  ok %-7d err %-5d p50 %7.2fms p99 %7.2fms max %7.2fms (from CONNECT p99 %.2fms)",
		label, r.Rate, r.Completed, r.Errors, r.Latency.P50Ms, r.Latency.P99Ms, r.Latency.MaxMs, r.FromConnect.P99Ms)
	if s := r.Server; s != nil {
		if s.Error != "" {
			fmt.Fprintf(w, "  server ?(%s)", s.Error)
		} else {
			fmt.Fprintf(w, "  server %6.0fµs/op %.2f cores rss %.1fMB", s.PerRegistrationUs, s.Cores, float64(s.RSSEndBytes)/1e6)
		}
	}
	fmt.Fprintf(w, "  loadgen %6.0fµs/op  other %.2f cores", r.LoadGenerator.PerRegistrationUs, r.Machine.OtherCores)
	if r.Machine.Noisy {
		fmt.Fprint(w, " NOISY")
	}
	fmt.Fprintln(w)
	for _, k := range r.ReasonKeys() {
		fmt.Fprintf(w, "%14s %-28s %d  (%s)\n", "error", k, r.ErrorsByReason[k], r.ErrorSamples[k])
	}
}

// Stats are the medians (and ranges) over the runs of one label.
type Stats struct {
	Runs            int        `json:"runs"`
	Rate            [3]float64 `json:"rateMinMedianMax"`
	P50Ms           float64    `json:"p50MsMedian"`
	P99Ms           float64    `json:"p99MsMedian"`
	ServerCPUUs     float64    `json:"serverCpuPerRegistrationUsMedian,omitempty"`
	LoadGenCPUUs    float64    `json:"loadGenCpuPerRegistrationUsMedian"`
	ServerRSSMaxMB  float64    `json:"serverRssMaxMB,omitempty"`
	Errors          int64      `json:"errors"`
	NoisyRuns       int        `json:"noisyRuns"`
	CompletedInRuns int64      `json:"completed"`
}

func summarize(runs []*load.Result) map[string]Stats {
	by := map[string][]*load.Result{}
	for _, r := range runs {
		by[r.Label] = append(by[r.Label], r)
	}
	out := map[string]Stats{}
	for label, rs := range by {
		var rates, p50, p99, srv, lg []float64
		s := Stats{Runs: len(rs)}
		for _, r := range rs {
			rates = append(rates, r.Rate)
			p50 = append(p50, r.Latency.P50Ms)
			p99 = append(p99, r.Latency.P99Ms)
			lg = append(lg, r.LoadGenerator.PerRegistrationUs)
			if r.Server != nil && r.Server.Error == "" {
				srv = append(srv, r.Server.PerRegistrationUs)
				s.ServerRSSMaxMB = max(s.ServerRSSMaxMB, float64(r.Server.RSSEndBytes)/1e6)
			}
			s.Errors += r.Errors
			s.CompletedInRuns += r.Completed
			if r.Machine.Noisy {
				s.NoisyRuns++
			}
		}
		sort.Float64s(rates)
		s.Rate = [3]float64{rates[0], stats.Median(rates), rates[len(rates)-1]}
		s.P50Ms, s.P99Ms, s.LoadGenCPUUs = stats.Median(p50), stats.Median(p99), stats.Median(lg)
		if len(srv) > 0 {
			s.ServerCPUUs = stats.Median(srv)
		}
		out[label] = s
	}
	return out
}

// Comparison is target over baseline: the ratio of each side's median
// over its runs, and the ratios paired within each round, which drift
// with the host less (perf-baselines.md, table R).
type Comparison struct {
	Rounds int `json:"rounds"`
	// RateRatio < 1: the target provisions that fraction of the baseline's rate.
	RateRatio float64 `json:"rateRatio"`
	// ServerCPURatio > 1: the target's server spends that many times the
	// baseline's CPU per registration.
	ServerCPURatio float64 `json:"serverCpuRatio,omitempty"`
	P50Ratio       float64 `json:"p50Ratio"`
	P99Ratio       float64 `json:"p99Ratio"`
	// Paired ratios per round, and their medians over all rounds and over
	// the rounds where neither run was noisy.
	PairedRate           []float64 `json:"pairedRateRatios"`
	PairedServerCPU      []float64 `json:"pairedServerCpuRatios,omitempty"`
	PairedRateMedian     float64   `json:"pairedRateRatioMedian"`
	PairedCPUMedian      float64   `json:"pairedServerCpuRatioMedian,omitempty"`
	CleanRounds          int       `json:"cleanRounds"`
	CleanRateMedian      float64   `json:"cleanPairedRateRatioMedian,omitempty"`
	CleanServerCPUMedian float64   `json:"cleanPairedServerCpuRatioMedian,omitempty"`
}

func div(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

func compare(s map[string]Stats, runs []*load.Result) *Comparison {
	b, t := s["baseline"], s["target"]
	c := &Comparison{Rounds: min(b.Runs, t.Runs)}
	c.RateRatio = div(t.Rate[1], b.Rate[1])
	c.ServerCPURatio = div(t.ServerCPUUs, b.ServerCPUUs)
	c.P50Ratio, c.P99Ratio = div(t.P50Ms, b.P50Ms), div(t.P99Ms, b.P99Ms)

	rounds := map[int]map[string]*load.Result{}
	for _, r := range runs {
		if rounds[r.Round] == nil {
			rounds[r.Round] = map[string]*load.Result{}
		}
		rounds[r.Round][r.Label] = r
	}
	var cleanRate, cleanCPU []float64
	for round := 1; round <= c.Rounds; round++ {
		br, tr := rounds[round]["baseline"], rounds[round]["target"]
		if br == nil || tr == nil {
			continue
		}
		rate := div(tr.Rate, br.Rate)
		c.PairedRate = append(c.PairedRate, rate)
		clean := !br.Machine.Noisy && !tr.Machine.Noisy
		if clean {
			c.CleanRounds++
			cleanRate = append(cleanRate, rate)
		}
		if br.Server != nil && tr.Server != nil && br.Server.Error == "" && tr.Server.Error == "" {
			cpu := div(tr.Server.PerRegistrationUs, br.Server.PerRegistrationUs)
			c.PairedServerCPU = append(c.PairedServerCPU, cpu)
			if clean {
				cleanCPU = append(cleanCPU, cpu)
			}
		}
	}
	c.PairedRateMedian, c.PairedCPUMedian = stats.Median(c.PairedRate), stats.Median(c.PairedServerCPU)
	c.CleanRateMedian, c.CleanServerCPUMedian = stats.Median(cleanRate), stats.Median(cleanCPU)
	return c
}

func printComparison(w io.Writer, c *Comparison) {
	fmt.Fprintf(w, "compare (%d rounds, target/baseline): ratio of medians: rate %.2fx  server CPU/op %.2fx  p50 %.2fx  p99 %.2fx\n",
		c.Rounds, c.RateRatio, c.ServerCPURatio, c.P50Ratio, c.P99Ratio)
	fmt.Fprintf(w, "compare paired per round: rate %.2fx  server CPU/op %.2fx (medians); clean rounds %d: rate %.2fx  server CPU/op %.2fx\n",
		c.PairedRateMedian, c.PairedCPUMedian, c.CleanRounds, c.CleanRateMedian, c.CleanServerCPUMedian)
}

// baselineProc is a baseline broker started as a child process, so that
// its CPU is its own and not mixed with the load generator's.
type baselineProc struct {
	addr  string
	pid   int
	roots *x509.CertPool // trusts its server certificate (nil: --ca-file does)
	stop  func(io.Writer)
}

func startBaseline(ctx context.Context, o *options, pki *fleet.PKI, stderr io.Writer) (*baselineProc, error) {
	dir, err := os.MkdirTemp("", "dpsload-baseline-")
	if err != nil {
		return nil, err
	}
	cleanup := func() { _ = os.RemoveAll(dir) }
	certFile, keyFile := o.baselineCert, o.baselineKey
	var roots *x509.CertPool
	if certFile == "" {
		certPEM, keyPEM, pool, err := fleet.ServerIdentity()
		if err != nil {
			cleanup()
			return nil, err
		}
		certFile, keyFile, roots = filepath.Join(dir, "server.pem"), filepath.Join(dir, "server.key"), pool
		if err := errors.Join(os.WriteFile(certFile, certPEM, 0o600), os.WriteFile(keyFile, keyPEM, 0o600)); err != nil {
			cleanup()
			return nil, err
		}
	}
	clientCA := filepath.Join(dir, "client-ca.pem")
	if err := os.WriteFile(clientCA, pkitest.CertPEM(pki.Anchor), 0o600); err != nil {
		cleanup()
		return nil, err
	}
	args := []string{"--listen", "127.0.0.1:0", "--tls-cert", certFile, "--tls-key", keyFile, "--client-ca", clientCA, "--kex", o.baselineKex}
	if o.resume {
		args = append(args, "--tickets")
	}
	child, err := startChild(ctx, args, stderr)
	if err != nil {
		cleanup()
		return nil, err
	}
	fmt.Fprintf(stderr, "dpsload: baseline broker pid %d on %s\n", child.pid, child.addr)
	return &baselineProc{addr: child.addr, pid: child.pid, roots: roots, stop: func(w io.Writer) {
		child.stop(w)
		cleanup()
	}}, nil
}
