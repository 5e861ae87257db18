package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/dpsbroker/dpsbroker/cmd/internal/stats"
)

// The shapes of dpsload's JSON result files that the report reads.
type (
	loadFile struct {
		Args    []string       `json:"args"`
		Machine machine        `json:"machine"`
		Runs    []loadRun      `json:"runs"`
		Compare *loadCompare   `json:"compare"`
		Extra   map[string]any `json:"-"`
	}
	machine struct {
		Kernel     string `json:"kernel"`
		CPUModel   string `json:"cpuModel"`
		NumCPU     int    `json:"numCPU"`
		GOMAXPROCS int    `json:"gomaxprocs"`
		GoVersion  string `json:"goVersion"`
		MemTotal   uint64 `json:"memTotalBytes"`
		OS         string `json:"os"`
		Arch       string `json:"arch"`
	}
	loadRun struct {
		Label          string           `json:"label"`
		Round          int              `json:"round"`
		Concurrency    int              `json:"concurrency"`
		TargetRate     float64          `json:"targetRate"`
		Completed      int64            `json:"completed"`
		Rate           float64          `json:"rate"`
		Errors         int64            `json:"errors"`
		ErrorsByReason map[string]int64 `json:"errorsByReason"`
		Latency        latency          `json:"latency"`
		FromConnect    latency          `json:"latencyFromConnect"`
		Polls          int64            `json:"polls"`
		FastAssigned   int64            `json:"fastAssigned"`
		Server         *struct {
			PerOpUs float64 `json:"cpuPerRegistrationUs"`
			Cores   float64 `json:"cores"`
			RSSEnd  uint64  `json:"rssEndBytes"`
			Error   string  `json:"error"`
		} `json:"server"`
		LoadGenerator struct {
			PerOpUs float64 `json:"cpuPerRegistrationUs"`
		} `json:"loadGenerator"`
		Machine struct {
			OtherCores float64 `json:"otherCores"`
			Noisy      bool    `json:"noisy"`
		} `json:"machine"`
	}
	latency struct {
		Count   uint64   `json:"count"`
		P50Ms   float64  `json:"p50Ms"`
		P90Ms   float64  `json:"p90Ms"`
		P99Ms   float64  `json:"p99Ms"`
		P999Ms  float64  `json:"p999Ms"`
		MaxMs   float64  `json:"maxMs"`
		Buckets []bucket `json:"buckets"`
	}
	bucket struct {
		UpperNs int64  `json:"upperNs"`
		Count   uint64 `json:"count"`
	}
	loadCompare struct {
		RateRatio            float64   `json:"rateRatio"`
		ServerCPURatio       float64   `json:"serverCpuRatio"`
		PairedRate           []float64 `json:"pairedRateRatios"`
		PairedServerCPU      []float64 `json:"pairedServerCpuRatios"`
		CleanRounds          int       `json:"cleanRounds"`
		CleanRateMedian      float64   `json:"cleanPairedRateRatioMedian"`
		CleanServerCPUMedian float64   `json:"cleanPairedServerCpuRatioMedian"`
	}
	// collectedPoint is a hold reading taken after a release.
	collectedPoint struct {
		Connections int    `json:"connections"`
		RSSBytes    uint64 `json:"rssBytes"`
	}
	holdFile struct {
		Points []struct {
			Connections int    `json:"connections"`
			RSSBytes    uint64 `json:"rssBytes"`
			HeapInuse   uint64 `json:"heapInuseBytes"`
			StackInuse  uint64 `json:"stackInuseBytes"`
			Goroutines  uint64 `json:"goroutines"`
		} `json:"points"`
		BytesPerConnection     float64 `json:"rssBytesPerConnection"`
		HeapBytesPerConnection float64 `json:"heapStackBytesPerConnection"`
		// After SIGUSR1 (dpsload hold --collect): collected and returned.
		CollectedNone                   *collectedPoint  `json:"collectedNone"`
		Collected                       *collectedPoint  `json:"collected"`
		CollectedBytesPerConnection     float64          `json:"collectedRssBytesPerConnection"`
		CollectedHeapBytesPerConnection float64          `json:"collectedHeapStackBytesPerConnection"`
		ConnectRate                     float64          `json:"connectRate"`
		Failed                          int64            `json:"failed"`
		FailedBy                        map[string]int64 `json:"failedBy"`
	}
)

// dpsload runs the built dpsload with args, its JSON result to
// results/name.json and its output to logs/name.log, and records the
// command for the report.
func (b *bench) dpsload(ctx context.Context, name string, args ...string) (string, error) {
	l, err := b.startDpsload(ctx, name, args...)
	if err != nil {
		return "", err
	}
	if err := l.wait(); err != nil {
		return "", err
	}
	b.rep.commands = append(b.rep.commands, l.line)
	return l.out, nil
}

// loadCmd is a started dpsload. exited is closed once it has ended, err
// and the log file closed.
type loadCmd struct {
	out, line string
	cmd       *exec.Cmd
	log       *os.File
	exited    chan struct{}
	err       error
}

func (b *bench) startDpsload(ctx context.Context, name string, args ...string) (*loadCmd, error) {
	out := filepath.Join(b.work, "results", name+".json")
	args = append(args, "--out", out)
	logf, err := os.Create(filepath.Join(b.work, "logs", name+".log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, filepath.Join(b.bin, "dpsload"), args...)
	cmd.Env = append(os.Environ(), "DPSLOAD_ADMIN_TOKEN="+b.token)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.WaitDelay = 10 * time.Second
	l := &loadCmd{out: out, line: b.shown("dpsload " + shellJoin(args)), cmd: cmd, log: logf, exited: make(chan struct{})}
	b.logf("%s", name)
	if err := cmd.Start(); err != nil {
		_ = logf.Close()
		return nil, fmt.Errorf("%s: %w", l.line, err)
	}
	go func() {
		l.err = cmd.Wait()
		_ = logf.Close()
		close(l.exited)
	}()
	return l, nil
}

// wait waits for the dpsload to end; a failure carries its output's tail.
// It may be called again.
func (l *loadCmd) wait() error {
	<-l.exited
	if l.err != nil {
		tail, _ := os.ReadFile(l.log.Name())
		if len(tail) > 2000 {
			tail = tail[len(tail)-2000:]
		}
		return fmt.Errorf("%s: %w\n%s", l.line, l.err, tail)
	}
	return nil
}

// dpsloadTogether runs one dpsload per name at the same time: each
// prepares on its own (minting, enrolling, --idle-wait), and all begin
// their measured run at once through dpsload's start gate, so that the
// host's drift during the window hits every one of them alike. It returns
// the result files in the order of names.
func (b *bench) dpsloadTogether(ctx context.Context, names []string, args [][]string) ([]string, error) {
	gateDir := filepath.Join(b.work, "gates")
	if err := os.MkdirAll(gateDir, 0o755); err != nil {
		return nil, err
	}
	startFile := filepath.Join(gateDir, names[0]+".start")
	_ = os.Remove(startFile)
	var cmds []*loadCmd
	stopAll := func() {
		for _, l := range cmds {
			_ = l.cmd.Process.Kill()
			_ = l.wait()
		}
	}
	var ready []string
	for i, name := range names {
		r := filepath.Join(gateDir, name+".ready")
		_ = os.Remove(r)
		ready = append(ready, r)
		l, err := b.startDpsload(ctx, name, append(slices.Clone(args[i]), "--ready-file", r, "--start-file", startFile)...)
		if err != nil {
			stopAll()
			return nil, err
		}
		cmds = append(cmds, l)
	}
	// Preparation is bounded by dpsload's own limits (admin timeouts,
	// --idle-wait); the bound here only catches a wedged process.
	deadline := time.Now().Add(3 * time.Minute)
	for {
		all := true
		for _, r := range ready {
			if _, err := os.Stat(r); err != nil {
				all = false
			}
		}
		if all {
			break
		}
		for _, l := range cmds {
			select {
			case <-l.exited:
				err := l.wait() // the command, its status and its output's tail
				if err == nil {
					err = fmt.Errorf("%s: exited without running", l.line)
				}
				stopAll()
				return nil, fmt.Errorf("a dpsload ended before the start: %w", err)
			default:
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			stopAll()
			return nil, fmt.Errorf("dpsloads %v not ready after 3 minutes", names)
		}
		time.Sleep(5 * time.Millisecond)
	}
	var pids strings.Builder
	for _, l := range cmds {
		fmt.Fprintln(&pids, l.cmd.Process.Pid)
	}
	if err := os.WriteFile(startFile, []byte(pids.String()), 0o644); err != nil {
		stopAll()
		return nil, err
	}
	var outs []string
	var errs []error
	for _, l := range cmds {
		errs = append(errs, l.wait())
		outs = append(outs, l.out)
		b.rep.commands = append(b.rep.commands, l.line)
	}
	return outs, errors.Join(errs...)
}

// shellJoin joins args for display, quoting the empty ones.
func shellJoin(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = a
		if a == "" {
			q[i] = "''"
		}
	}
	return strings.Join(q, " ")
}

func readJSON[T any](path string) (*T, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var v T
	if err := json.Unmarshal(data, &v); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &v, nil
}

// targetArgs are the flags every run against a broker shares.
func (b *bench) targetArgs(br *broker) []string {
	args := []string{"--broker", br.mqtt, "--ca-file", b.pki("root.pem"), "--admin", br.admin,
		"--poll-after", "0", "--quiet", "--idle-wait", b.cfg.idleWait}
	for _, p := range b.pids(br) {
		args = append(args, "--server-pid", fmt.Sprint(p))
	}
	return args
}

func (b *bench) baselineArgs() []string {
	return []string{"--baseline-tls-cert", b.pki("server.pem"), "--baseline-tls-key", b.pki("server.key")}
}

func (b *bench) runPlan(ctx context.Context) error {
	c := b.cfg
	b.rep.quick = c.quick
	b.rep.started = time.Now()
	if err := b.startRedis(ctx); err != nil {
		return err
	}

	// Seeding first: the large fleet must be in the embedded store file
	// before its broker opens it.
	if err := b.seedFleets(ctx); err != nil {
		return err
	}

	emb, err := b.startBroker(ctx, "embedded", brokerOpts{fastPath: true, redisDB: -1})
	if err != nil {
		return err
	}
	red, err := b.startBroker(ctx, "redis", brokerOpts{fastPath: true, redisDB: 0})
	if err != nil {
		return err
	}

	// 1. Throughput against concurrency, interleaved with the baseline.
	win := c.window.String()
	for _, conc := range c.concurrency {
		for r := 1; r <= c.rounds; r++ {
			order := []*broker{emb, red}
			if r%2 == 0 {
				order = []*broker{red, emb}
			}
			for _, br := range order {
				name := fmt.Sprintf("throughput-%s-c%d-r%d", br.name, conc, r)
				args := append(b.targetArgs(br), b.baselineArgs()...)
				args = append(args, "-c", fmt.Sprint(conc), "--warmup", "1s", "--duration", win, "--compare", "--rounds", "2")
				path, err := b.dpsload(ctx, name, args...)
				if err != nil {
					return err
				}
				f, err := readJSON[loadFile](path)
				if err != nil {
					return err
				}
				b.rep.machine = f.Machine
				b.rep.throughput = append(b.rep.throughput, throughputRun{store: br.name, conc: conc, file: f})
			}
		}
	}

	// 2. Latency at half the highest rate measured for the embedded store.
	maxRate := 0.0
	for _, t := range b.rep.throughput {
		if t.store == "embedded" {
			maxRate = max(maxRate, medianRate(t.file.Runs, "target"))
		}
	}
	if maxRate <= 0 {
		return fmt.Errorf("no throughput measured")
	}
	b.rep.maxRate = maxRate
	rate := fmt.Sprintf("%.0f", maxRate/2)
	b.noteFile("1", emb)
	// Both paths get a fresh broker: the one of table 1 carries the file
	// that part grew (tens of thousands of registrations, operations and
	// events), which a fresh 202 + poll broker would not, and the
	// comparison would measure the file rather than the path.
	fast, err := b.startBroker(ctx, "latency-fast", brokerOpts{fastPath: true, redisDB: -1})
	if err != nil {
		return err
	}
	poll, err := b.startBroker(ctx, "latency-poll", brokerOpts{fastPath: false, redisDB: -1})
	if err != nil {
		return err
	}
	latArgs := []string{"--rate", rate, "-c", "256", "--devices", "1000", "--warmup", "1s", "--duration", c.latWindow.String()}
	for r := 1; r <= c.rounds; r++ {
		steps := []string{"baseline", "fast", "poll"}
		if r%2 == 0 {
			steps = []string{"poll", "fast", "baseline"}
		}
		for _, s := range steps {
			name := fmt.Sprintf("latency-%s-r%d", s, r)
			var args []string
			switch s {
			case "baseline":
				args = append([]string{"--baseline", "--ca-file", b.pki("root.pem"), "--quiet", "--idle-wait", b.cfg.idleWait}, b.baselineArgs()...)
			case "fast":
				args = b.targetArgs(fast)
			case "poll":
				args = b.targetArgs(poll)
			}
			path, err := b.dpsload(ctx, name, append(args, latArgs...)...)
			if err != nil {
				return err
			}
			f, err := readJSON[loadFile](path)
			if err != nil {
				return err
			}
			b.rep.latency = append(b.rep.latency, latencyRun{kind: s, file: f})
		}
	}
	b.noteFile("2", fast)
	b.noteFile("2", poll)
	b.stopBroker(fast)
	b.stopBroker(poll)

	// 3. Memory of idle connected devices: a fresh broker, then the baseline.
	if err := b.memory(ctx); err != nil {
		return err
	}

	// 4. Fleet size.
	if err := b.fleetRuns(ctx); err != nil {
		return err
	}
	b.stopBroker(emb)
	b.stopBroker(red)

	b.rep.finished = time.Now()
	return b.writeReport()
}

func (b *bench) memory(ctx context.Context) error {
	hb, err := b.startBroker(ctx, "hold", brokerOpts{fastPath: true, redisDB: -1})
	if err != nil {
		return err
	}
	common := []string{"--ca-file", b.pki("root.pem"), "--levels", b.cfg.holdLevels, "--settle", "3s", "-c", "32", "--collect"}
	path, err := b.dpsload(ctx, "memory-broker", append([]string{"hold", "--broker", hb.mqtt, "--admin", hb.admin,
		"--server-pid", fmt.Sprint(hb.p.pid), "--metrics", hb.http + "/metrics"}, common...)...)
	b.stopBroker(hb)
	if err != nil {
		return err
	}
	if b.rep.memBroker, err = readJSON[holdFile](path); err != nil {
		return err
	}

	port, err := freePort()
	if err != nil {
		return err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	bl, err := start(filepath.Join(b.work, "logs"), "baseline-hold", nil, filepath.Join(b.bin, "dpsload"), "serve-baseline",
		"--listen", addr, "--tls-cert", b.pki("server.pem"), "--tls-key", b.pki("server.key"), "--client-ca", b.pki("devices-root.pem"))
	if err != nil {
		return err
	}
	b.procs = append(b.procs, bl)
	if err := waitFor(ctx, bl, 15*time.Second, "listening", tcpOpen(addr)); err != nil {
		return err
	}
	b.rep.commands = append(b.rep.commands, b.shown("dpsload serve-baseline --listen "+addr+" --tls-cert "+b.pki("server.pem")+
		" --tls-key "+b.pki("server.key")+" --client-ca "+b.pki("devices-root.pem")))
	path, err = b.dpsload(ctx, "memory-baseline", append([]string{"hold", "--broker", addr,
		"--ca-cert", b.pki("devices-ca.pem"), "--ca-key", b.pki("devices-ca.key"), "--server-pid", fmt.Sprint(bl.pid)}, common...)...)
	b.stopBroker(&broker{p: bl})
	if err != nil {
		return err
	}
	b.rep.memBaseline, err = readJSON[holdFile](path)
	return err
}

// seedFleets writes the small and the large fake fleets: straight into
// the embedded store files, and through the Redis store into databases 1
// (small) and 2 (large).
func (b *bench) seedFleets(ctx context.Context) error {
	c := b.cfg
	for _, f := range []struct {
		name string
		n    int
	}{{"fleet-small", c.smallFleet}, {"fleet-large", c.fleet}} {
		dir := filepath.Join(b.work, "brokers", f.name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		b.logf("seeding %d enrollments into the embedded store %s", f.n, f.name)
		d, err := seedBolt(ctx, filepath.Join(dir, "dpsbroker.db"), "fleet-", f.n, b.log)
		if err != nil {
			return err
		}
		st, _ := os.Stat(filepath.Join(dir, "dpsbroker.db"))
		b.rep.seeds = append(b.rep.seeds, seedResult{store: "embedded", n: f.n, took: d, bytes: uint64(st.Size())})
		b.rep.commands = append(b.rep.commands, b.shown(fmt.Sprintf("dpsbench seed -bolt %s -n %d", filepath.Join(dir, "dpsbroker.db"), f.n)))
	}
	if !c.redisFleet {
		return nil
	}
	for db, n := range map[int]int{1: c.smallFleet, 2: c.fleet} {
		before, _ := rssOf(b.redis.pid)
		b.logf("seeding %d enrollments into Redis db %d", n, db)
		d, err := seedRedis(ctx, b.rAddr, db, defaultIDScope, "fleet-", n, b.log)
		if err != nil {
			return err
		}
		after, _ := rssOf(b.redis.pid)
		b.rep.seeds = append(b.rep.seeds, seedResult{store: "redis", n: n, took: d, bytes: after - min(before, after)})
		b.rep.commands = append(b.rep.commands, b.shown(fmt.Sprintf("dpsbench seed -redis %s -db %d -n %d", b.rAddr, db, n)))
	}
	return nil
}

// defaultIDScope is the broker's default ID scope, which the Redis keys
// are namespaced by.
const defaultIDScope = "0ne00000000"

func (b *bench) fleetRuns(ctx context.Context) error {
	c := b.cfg
	type pair struct {
		store        string
		small, large *broker
	}
	var pairs []pair
	s, err := b.startBroker(ctx, "fleet-small", brokerOpts{fastPath: true, redisDB: -1})
	if err != nil {
		return err
	}
	l, err := b.startBroker(ctx, "fleet-large", brokerOpts{fastPath: true, redisDB: -1})
	if err != nil {
		return err
	}
	pairs = append(pairs, pair{"embedded", s, l})
	if c.redisFleet {
		rs, err := b.startBroker(ctx, "fleet-small-redis", brokerOpts{fastPath: true, redisDB: 1})
		if err != nil {
			return err
		}
		rl, err := b.startBroker(ctx, "fleet-large-redis", brokerOpts{fastPath: true, redisDB: 2})
		if err != nil {
			return err
		}
		pairs = append(pairs, pair{"redis", rs, rl})
	}
	// Both brokers of a pair are loaded in the same window (c=8 each, the
	// same 16 in flight as the other parts) rather than one after the
	// other: the host's drift, which moves sequential windows by ±10 %
	// here, then hits both alike and the paired ratio keeps only what the
	// fleet size costs. The start gate starts both at once, so the order
	// they are launched in does not matter.
	win := c.fleetWindow.String()
	for _, p := range pairs {
		sides := []struct {
			br, peer *broker
			size     int
			large    bool
		}{{p.small, p.large, c.smallFleet, false}, {p.large, p.small, c.fleet, true}}
		for _, kind := range []string{"group", "individual"} {
			for r := 1; r <= c.fleetRounds; r++ {
				var names []string
				var args [][]string
				for _, sd := range sides {
					br, peer := sd.br, sd.peer
					names = append(names, fmt.Sprintf("fleet-%s-%s-%d-r%d", p.store, kind, sd.size, r))
					a := append(b.targetArgs(br), "-c", fmt.Sprint(c.fleetConc), "--warmup", "1s", "--duration", win, "--device-prefix", kind+"-")
					// The peer broker's CPU is load on purpose; a shared
					// redis-server is already in both sides' server CPU.
					a = append(a, "--peer-pid", fmt.Sprint(peer.p.pid))
					if kind == "individual" {
						a = append(a, "--individual")
					}
					args = append(args, a)
				}
				paths, err := b.dpsloadTogether(ctx, names, args)
				if err != nil {
					return err
				}
				for i, sd := range sides {
					f, err := readJSON[loadFile](paths[i])
					if err != nil {
						return err
					}
					b.rep.fleet = append(b.rep.fleet, fleetRun{store: p.store, kind: kind, size: sd.size, round: r, large: sd.large, file: f})
				}
			}
		}
		b.noteFile("4", p.small)
		b.noteFile("4", p.large)
		b.stopBroker(p.small)
		b.stopBroker(p.large)
	}
	return nil
}

func medianRate(runs []loadRun, label string) float64 {
	var v []float64
	for _, r := range runs {
		if r.Label == label {
			v = append(v, r.Rate)
		}
	}
	return stats.Median(v)
}
