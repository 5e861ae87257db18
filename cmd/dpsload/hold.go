package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dpsbroker/dpsbroker/clients/service"
	"github.com/dpsbroker/dpsbroker/cmd/dpsload/internal/load"
	"github.com/dpsbroker/dpsbroker/cmd/dpsload/internal/mqttraw"
	"github.com/dpsbroker/dpsbroker/cmd/dpsload/internal/sysstat"
	"github.com/dpsbroker/dpsbroker/provisioning/wire"
)

// HoldFile is the JSON result of "dpsload hold": the server's memory at
// each number of connected, idle devices.
type HoldFile struct {
	Tool    string          `json:"tool"`
	Args    []string        `json:"args"`
	Started time.Time       `json:"started"`
	Machine sysstat.Machine `json:"machine"`
	Broker  string          `json:"broker"`
	Points  []HoldPoint     `json:"points"`
	// BytesPerConnection is (RSS at the last level - RSS with none) / the
	// last level's connections: the memory one idle device costs.
	BytesPerConnection float64 `json:"rssBytesPerConnection"`
	// HeapBytesPerConnection is the same for Go heap + stack in use, when
	// --metrics gives them.
	HeapBytesPerConnection float64 `json:"heapStackBytesPerConnection,omitempty"`
	// Steady is the last level read again after --steady (nil without
	// it): the idle broker once its periodic garbage collections have run.
	// Garbage made by idle sessions (mochi's once-a-second housekeeping
	// copies its client map) is collected only every minute or two, and
	// the pages it used stay resident, so RSS settles above the figure
	// read a few seconds after the connections were made.
	Steady *HoldPoint `json:"steady,omitempty"`
	// SteadyPeakRSSBytes is the highest RSS seen while waiting for Steady.
	SteadyPeakRSSBytes uint64 `json:"steadyPeakRssBytes,omitempty"`
	// SteadyBytesPerConnection is (Steady RSS - RSS with none) / its
	// connections; SteadyHeapBytesPerConnection the same for Go heap +
	// stack in use (which includes garbage not yet collected).
	SteadyBytesPerConnection     float64 `json:"steadyRssBytesPerConnection,omitempty"`
	SteadyHeapBytesPerConnection float64 `json:"steadyHeapStackBytesPerConnection,omitempty"`
	// Collected and CollectedNone are the last level and the empty server
	// read again after asking the servers to collect and return free memory
	// to the OS (--collect: SIGUSR1, which dpsbroker and dpsload's baseline
	// handle); CollectedBytesPerConnection is the RSS difference per
	// connection between them. This is how notes/perf-baselines.md
	// measured plain mochi's ~50 KB: the memory an idle device needs,
	// without the collector's slack.
	CollectedNone                        *HoldPoint `json:"collectedNone,omitempty"`
	Collected                            *HoldPoint `json:"collected,omitempty"`
	CollectedBytesPerConnection          float64    `json:"collectedRssBytesPerConnection,omitempty"`
	CollectedHeapStackBytesPerConnection float64    `json:"collectedHeapStackBytesPerConnection,omitempty"`
	// ConnectRate is connections per second while filling (TLS + CONNECT).
	ConnectRate float64          `json:"connectRate"`
	Failed      int64            `json:"failed"`
	FailedBy    map[string]int64 `json:"failedBy,omitempty"`
}

// HoldPoint is one level of connections.
type HoldPoint struct {
	Connections int `json:"connections"`
	// RSSBytes sums the --server-pid processes' resident memory.
	RSSBytes uint64 `json:"rssBytes"`
	// Go runtime figures from --metrics (0 when not given).
	HeapInuseBytes  uint64 `json:"heapInuseBytes,omitempty"`
	StackInuseBytes uint64 `json:"stackInuseBytes,omitempty"`
	Goroutines      uint64 `json:"goroutines,omitempty"`
	// GCCycles is the server's count of completed garbage collections.
	GCCycles uint64 `json:"gcCycles,omitempty"`
	// LoadGenRSSBytes is this process's own resident memory.
	LoadGenRSSBytes uint64 `json:"loadGenRssBytes"`
}

type holdOptions struct {
	broker string
	deviceSource
	levels     string
	dialers    int
	settle     time.Duration
	steady     time.Duration
	collect    bool
	keepAlive  int
	mqtt       int
	curves     string
	serverPIDs intList
	metrics    string
	out        string
	allowRem   bool
	timeout    time.Duration
}

// hold opens idle device connections in steps and reads the server's
// memory at each step: TLS + CONNECT, then nothing until the end.
func hold(ctx context.Context, args []string, stdout, stderr io.Writer, env func(string) (string, bool)) int {
	var o holdOptions
	fs := flag.NewFlagSet("dpsload hold", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.broker, "broker", "127.0.0.1:8883", "broker MQTT-over-TLS `host:port`")
	o.deviceSource.register(fs, "dpsload-hold", "dpsload-hold-")
	fs.StringVar(&o.levels, "levels", "1000,2000,5000", "comma-separated `counts` of connected devices at which memory is read")
	fs.IntVar(&o.dialers, "c", 32, "connections being opened at once")
	fs.DurationVar(&o.settle, "settle", 3*time.Second, "wait after reaching a level before reading memory")
	fs.DurationVar(&o.steady, "steady", 0, "after the last level, hold the connections this much longer and read memory again: the idle steady state (Go collects at least every 2 minutes; 4m sees two cycles)")
	fs.BoolVar(&o.collect, "collect", false, "also read memory after asking the servers to collect garbage and return it to the OS (SIGUSR1 to every --server-pid; dpsbroker and dpsload serve-baseline handle it), with none and with all connections held")
	fs.IntVar(&o.keepAlive, "keepalive", 600, "MQTT keep-alive `seconds` sent in CONNECT (no PINGREQ is sent: keep it longer than the run)")
	fs.IntVar(&o.mqtt, "mqtt", 4, "MQTT protocol `level`: 4 or 5")
	fs.StringVar(&o.curves, "curves", "hybrid", "TLS 1.3 key exchange offered: hybrid, x25519 or p256")
	fs.Var(&o.serverPIDs, "server-pid", "`pid` of a server process whose RSS counts (repeatable, summed; required)")
	fs.StringVar(&o.metrics, "metrics", "", "Prometheus `URL` of the broker, for Go heap, stack and goroutines")
	fs.StringVar(&o.out, "out", "", "write the JSON result to `file`")
	fs.BoolVar(&o.allowRem, "allow-remote", false, "allow a broker that is not a loopback address")
	fs.DurationVar(&o.timeout, "timeout", 20*time.Second, "bound on one connection's TLS + CONNECT")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	levels, err := parseLevels(o.levels)
	var errs []error
	errs = append(errs, err)
	if o.caFile == "" {
		errs = append(errs, errors.New("--ca-file is required"))
	}
	if len(o.serverPIDs) == 0 {
		errs = append(errs, errors.New("--server-pid is required: the memory is read from /proc"))
	}
	if (o.caCert == "") == (o.admin == "") {
		errs = append(errs, errors.New("give either --ca-cert/--ca-key (an enrolled CA) or --admin"))
	}
	if (o.caCert == "") != (o.caKey == "") {
		errs = append(errs, errors.New("--ca-cert and --ca-key go together"))
	}
	if o.steady < 0 {
		errs = append(errs, errors.New("--steady must not be negative"))
	}
	if o.dialers < 1 || o.mqtt != int(mqttraw.V311) && o.mqtt != int(mqttraw.V5) || o.keepAlive < 0 || o.keepAlive > 65535 {
		errs = append(errs, errors.New("-c must be at least 1, --mqtt 4 or 5, --keepalive 0..65535"))
	}
	if _, err := curvePrefs(o.curves); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		fmt.Fprintf(stderr, "dpsload hold: %v\n", err)
		return exitUsage
	}
	o.tokenFromEnv(env)
	if err := runHold(ctx, &o, levels, args, stdout, stderr); err != nil {
		fmt.Fprintf(stderr, "dpsload hold: %v\n", err)
		return exitError
	}
	return exitOK
}

func parseLevels(s string) ([]int, error) {
	var out []int
	for f := range strings.SplitSeq(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("--levels %q: positive counts", s)
		}
		out = append(out, n)
	}
	if !slices.IsSorted(out) {
		return nil, fmt.Errorf("--levels %q: counts must grow", s)
	}
	return out, nil
}

func runHold(ctx context.Context, o *holdOptions, levels []int, args []string, stdout, stderr io.Writer) error {
	lo := &options{brokers: listFlag{o.broker}, allowRemote: o.allowRem, deviceSource: o.deviceSource}
	if o.metrics != "" {
		lo.metrics = listFlag{o.metrics}
	}
	if err := lo.checkTargets(); err != nil {
		return err
	}
	pem, err := os.ReadFile(o.caFile)
	if err != nil {
		return err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return fmt.Errorf("--ca-file %s: no PEM certificate", o.caFile)
	}
	pki, err := lo.devicePKI()
	if err != nil {
		return err
	}
	if o.admin != "" {
		if o.token == "" {
			return errors.New("--admin needs a token: --token, $DPSLOAD_ADMIN_TOKEN or $DPSBROKER_ADMIN_TOKEN")
		}
		hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
		if err := pki.Enroll(ctx, service.New(o.admin, o.token, hc), o.groupID); err != nil {
			return err
		}
	}
	n := levels[len(levels)-1]
	mintStart := time.Now()
	devices, err := pki.Mint(ctx, o.devicePrefix, n)
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "dpsload hold: minted %d device certificates in %v\n", n, time.Since(mintStart).Round(time.Millisecond))

	curves, _ := curvePrefs(o.curves)
	name := o.serverName
	if name == "" {
		name = lo.serverNameFor(o.broker)
	}
	base := clientTLS(roots, name, curves)
	hc := &http.Client{Timeout: 5 * time.Second}

	res := &HoldFile{Tool: "dpsload hold", Args: redactArgs(args), Started: time.Now(), Machine: sysstat.Describe(), Broker: o.broker, FailedBy: map[string]int64{}}
	read := func(conns int) (HoldPoint, error) {
		p := HoldPoint{Connections: conns}
		s, err := load.PIDProbe(o.serverPIDs).Sample(ctx)
		if err != nil {
			return p, err
		}
		p.RSSBytes = s.RSS
		if self, err := sysstat.ReadProc(os.Getpid()); err == nil {
			p.LoadGenRSSBytes = self.RSS
		}
		if o.metrics != "" {
			g, err := scrapeGauges(ctx, hc, o.metrics, "go_memstats_heap_inuse_bytes", "go_memstats_stack_inuse_bytes", "go_goroutines", "go_gc_duration_seconds_count")
			if err != nil {
				return p, err
			}
			p.HeapInuseBytes, p.StackInuseBytes, p.Goroutines, p.GCCycles = uint64(g[0]), uint64(g[1]), uint64(g[2]), uint64(g[3])
		}
		return p, nil
	}
	show := func(what string, p HoldPoint) {
		fmt.Fprintf(stdout, "%-6s %6d connections  server rss %7.1f MB  heap %7.1f MB  stack %6.1f MB  goroutines %6d  loadgen rss %6.1f MB\n",
			what, p.Connections, float64(p.RSSBytes)/1e6, float64(p.HeapInuseBytes)/1e6, float64(p.StackInuseBytes)/1e6, p.Goroutines, float64(p.LoadGenRSSBytes)/1e6)
	}
	sample := func(conns int) error {
		p, err := read(conns)
		if err != nil {
			return err
		}
		res.Points = append(res.Points, p)
		show("hold", p)
		return nil
	}
	settle := func() {
		// The server's garbage collector runs on its own schedule; a short
		// pause lets the last connections' handshake garbage be collected
		// or at least counted the same way at every level.
		select {
		case <-time.After(o.settle):
		case <-ctx.Done():
		}
	}

	var (
		mu    sync.Mutex
		conns []net.Conn
	)
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	settle()
	if err := sample(0); err != nil {
		return err
	}
	collected := func(conns int) (*HoldPoint, error) {
		if err := collectServers(ctx, o.serverPIDs); err != nil {
			return nil, err
		}
		p, err := read(conns)
		if err != nil {
			return nil, err
		}
		show("freed", p)
		return &p, nil
	}
	if o.collect {
		if res.CollectedNone, err = collected(0); err != nil {
			return err
		}
	}
	var failed atomic.Int64
	var fillTime time.Duration
	next := 0
	for _, level := range levels {
		start := time.Now()
		idx := make(chan int)
		var wg sync.WaitGroup
		for range o.dialers {
			wg.Go(func() {
				for i := range idx {
					c, err := holdOne(ctx, base, o, devices[i], o.timeout)
					if err != nil {
						failed.Add(1)
						reason := classifyHold(err)
						mu.Lock()
						res.FailedBy[reason]++
						mu.Unlock()
						continue
					}
					mu.Lock()
					conns = append(conns, c)
					mu.Unlock()
				}
			})
		}
		for ; next < level && ctx.Err() == nil; next++ {
			idx <- next
		}
		close(idx)
		wg.Wait()
		fillTime += time.Since(start)
		if err := ctx.Err(); err != nil {
			return err
		}
		if f := failed.Load(); f > int64(level)/10 {
			return fmt.Errorf("%d of %d connections failed: %v", f, level, res.FailedBy)
		}
		settle()
		mu.Lock()
		open := len(conns)
		mu.Unlock()
		if err := sample(open); err != nil {
			return err
		}
	}
	res.Failed = failed.Load()
	first, last := res.Points[0], res.Points[len(res.Points)-1]
	if o.steady > 0 {
		if err := holdSteady(ctx, o.steady, read, res); err != nil {
			return err
		}
		show("steady", *res.Steady)
		res.SteadyBytesPerConnection, res.SteadyHeapBytesPerConnection = perConnection(first, *res.Steady, o.metrics != "")
	}
	res.BytesPerConnection, res.HeapBytesPerConnection = perConnection(first, last, o.metrics != "")
	if o.collect {
		// Last: a release resets the collector's cycle, which --steady
		// observes.
		if res.Collected, err = collected(last.Connections); err != nil {
			return err
		}
		res.CollectedBytesPerConnection, res.CollectedHeapStackBytesPerConnection = perConnection(*res.CollectedNone, *res.Collected, o.metrics != "")
	}
	if fillTime > 0 {
		res.ConnectRate = float64(last.Connections) / fillTime.Seconds()
	}
	fmt.Fprintf(stdout, "hold: %.0f bytes of server RSS per idle connection (%.0f heap+stack), filled at %.0f/s, %d failed\n",
		res.BytesPerConnection, res.HeapBytesPerConnection, res.ConnectRate, res.Failed)
	if res.Steady != nil {
		gcs := ""
		if o.metrics != "" {
			gcs = fmt.Sprintf(", %d collections while waiting", res.Steady.GCCycles-last.GCCycles)
		}
		fmt.Fprintf(stdout, "hold: steady after %v: %.0f bytes of server RSS per idle connection (%.0f heap+stack), peak rss %.1f MB%s\n",
			o.steady, res.SteadyBytesPerConnection, res.SteadyHeapBytesPerConnection, float64(res.SteadyPeakRSSBytes)/1e6, gcs)
	}
	if res.Collected != nil {
		fmt.Fprintf(stdout, "hold: after a release: %.0f bytes of server RSS per idle connection (%.0f heap+stack)\n",
			res.CollectedBytesPerConnection, res.CollectedHeapStackBytesPerConnection)
	}
	runtime.KeepAlive(devices)
	if o.out != "" {
		return writeJSON(o.out, res)
	}
	return nil
}

// holdSteadyEvery is how often RSS is read while waiting for the steady
// state, for its peak.
const holdSteadyEvery = 5 * time.Second

// holdSteady keeps the connections open for d, reading the server's RSS
// every few seconds for the peak, then records the steady point at the
// last level's count of connections.
func holdSteady(ctx context.Context, d time.Duration, read func(int) (HoldPoint, error), res *HoldFile) error {
	conns := res.Points[len(res.Points)-1].Connections
	end := time.Now().Add(d)
	for {
		wait := min(time.Until(end), holdSteadyEvery)
		if wait > 0 {
			select {
			case <-time.After(wait):
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		p, err := read(conns)
		if err != nil {
			return err
		}
		res.SteadyPeakRSSBytes = max(res.SteadyPeakRSSBytes, p.RSSBytes)
		if !time.Now().Before(end) {
			res.Steady = &p
			return nil
		}
	}
}

// holdOne opens one device connection: TCP, TLS, CONNECT, CONNACK.
func holdOne(ctx context.Context, base *tls.Config, o *holdOptions, dev *load.Device, timeout time.Duration) (net.Conn, error) {
	deadline := time.Now().Add(timeout)
	d := net.Dialer{Deadline: deadline}
	raw, err := d.DialContext(ctx, "tcp", o.broker)
	if err != nil {
		return nil, err
	}
	_ = raw.SetDeadline(deadline)
	cfg := base.Clone()
	cert := dev.Cred.ClientCertificate()
	cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
	tc := tls.Client(raw, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		_ = raw.Close()
		return nil, fmt.Errorf("tls: %w", err)
	}
	c := mqttraw.NewClient(tc, byte(o.mqtt))
	if _, err := c.Connect(mqttraw.Connect{
		ClientID:   dev.RegistrationID,
		Username:   wire.FormatUsername(o.idScope, dev.RegistrationID, "", "dpsload"),
		KeepAlive:  uint16(o.keepAlive),
		CleanStart: true,
	}); err != nil {
		_ = tc.Close()
		return nil, fmt.Errorf("connect: %w", err)
	}
	_ = raw.SetDeadline(time.Time{})
	return tc, nil
}

func classifyHold(err error) string {
	var cae *mqttraw.ConnackError
	switch {
	case errors.As(err, &cae):
		return fmt.Sprintf("connack:0x%02x", cae.Code)
	case strings.HasPrefix(err.Error(), "tls:"):
		return "tls"
	case strings.HasPrefix(err.Error(), "connect:"):
		return "connect"
	}
	return "dial"
}

// scrapeGauges reads the values of unlabelled metrics from a Prometheus
// text endpoint, in the order asked.
func scrapeGauges(ctx context.Context, hc *http.Client, url string, names ...string) ([]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s", url, resp.Status)
	}
	want := map[string]int{}
	for i, n := range names {
		want[n] = i
	}
	out := make([]float64, len(names))
	found := 0
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		name, val, ok := strings.Cut(sc.Text(), " ")
		i, hit := want[name]
		if !ok || !hit {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(val), 64)
		if err != nil {
			return nil, fmt.Errorf("%s: %s: %w", url, name, err)
		}
		out[i] = v
		found++
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if found < len(names) {
		return nil, fmt.Errorf("%s: missing some of %v", url, names)
	}
	return out, nil
}

// perConnection is the growth from none to p, per connection of p: of
// the server's RSS, and of its Go heap + stack when withGo (--metrics
// gave them). Both are 0 when p has no connection.
func perConnection(none, p HoldPoint, withGo bool) (rss, heapStack float64) {
	n := float64(p.Connections)
	if n == 0 {
		return 0, 0
	}
	rss = (float64(p.RSSBytes) - float64(none.RSSBytes)) / n
	if withGo {
		heapStack = (float64(p.HeapInuseBytes+p.StackInuseBytes) - float64(none.HeapInuseBytes+none.StackInuseBytes)) / n
	}
	return rss, heapStack
}

// collectWait bounds how long collectServers waits for the servers' RSS to
// settle after SIGUSR1; collectPoll is how often it reads it.
const (
	collectWait = 30 * time.Second
	collectPoll = 250 * time.Millisecond
)

// collectServers sends SIGUSR1 to every server process and waits until
// their summed RSS has stopped falling: the collections and the return of
// pages to the OS take from milliseconds to a second or two.
func collectServers(ctx context.Context, pids []int) error {
	for _, pid := range pids {
		if err := signalRelease(pid); err != nil {
			return fmt.Errorf("--collect: pid %d: %w", pid, err)
		}
	}
	deadline := time.Now().Add(collectWait)
	var prev uint64
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(collectPoll):
		}
		s, err := load.PIDProbe(pids).Sample(ctx)
		if err != nil {
			return err
		}
		// Settled: unchanged within 0.5 % over a poll, after at least a
		// second.
		if i >= 4 && float64(s.RSS) >= float64(prev)*0.995 && float64(s.RSS) <= float64(prev)*1.005 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("--collect: server RSS still changing after %v", collectWait)
		}
		prev = s.RSS
	}
}
