package main

import (
	"fmt"
	"image/color"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/dpsbroker/dpsbroker/cmd/internal/stats"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// Targets of the performance issue.
const (
	targetRateRatio  = 0.90 // X.509 provisioning rate / baseline rate, at least
	targetP99Ms      = 50.0 // CONNECT to assigned at half the maximum rate, at most
	targetCPURatio   = 1.15 // server CPU per registration / baseline's per exchange, at most
	targetIdleBytes  = 40 << 10
	targetFleetDelta = 0.05 // |rate at 1M / rate at 1k - 1|, at most
)

type (
	report struct {
		quick             bool
		started, finished time.Time
		machine           machine
		commands          []string
		throughput        []throughputRun
		maxRate           float64
		latency           []latencyRun
		memBroker         *holdFile
		memBaseline       *holdFile
		seeds             []seedResult
		fleet             []fleetRun
		files             []storeFile
	}
	// storeFile is an embedded store file's size at the end of a part.
	storeFile struct {
		part, broker string
		bytes        int64
	}
	throughputRun struct {
		store string
		conc  int
		file  *loadFile
	}
	latencyRun struct {
		kind string // baseline, fast, poll
		file *loadFile
	}
	fleetRun struct {
		store, kind string
		size, round int
		large       bool
		file        *loadFile
	}
	seedResult struct {
		store string
		n     int
		took  time.Duration
		bytes uint64
	}
)

// pairs are the same-round (target / baseline) ratios of one dpsload
// --compare file: rate and server CPU per operation, and whether both
// runs were clean.
type pairRatio struct {
	rate, cpu float64
	clean     bool
}

func pairsOf(f *loadFile) []pairRatio {
	byRound := map[int]map[string]loadRun{}
	for _, r := range f.Runs {
		if byRound[r.Round] == nil {
			byRound[r.Round] = map[string]loadRun{}
		}
		byRound[r.Round][r.Label] = r
	}
	var out []pairRatio
	for _, m := range byRound {
		bl, okB := m["baseline"]
		tg, okT := m["target"]
		if !okB || !okT || bl.Rate == 0 {
			continue
		}
		p := pairRatio{rate: tg.Rate / bl.Rate, clean: !bl.Machine.Noisy && !tg.Machine.Noisy}
		if bl.Server != nil && tg.Server != nil && bl.Server.PerOpUs > 0 {
			p.cpu = tg.Server.PerOpUs / bl.Server.PerOpUs
		}
		out = append(out, p)
	}
	return out
}

// stat is min / median / max.
type stat struct{ min, med, max float64 }

func statOf(v []float64) stat {
	if len(v) == 0 {
		return stat{}
	}
	s := slices.Clone(v)
	sort.Float64s(s)
	return stat{s[0], stats.Median(s), s[len(s)-1]}
}

func (s stat) rate() string {
	if s.med == 0 {
		return "–"
	}
	return fmt.Sprintf("%.0f (%.0f–%.0f)", s.med, s.min, s.max)
}

func (s stat) ratio() string {
	if s.med == 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f× (%.2f–%.2f)", s.med, s.min, s.max)
}

// throughputCell gathers the runs of one store at one concurrency.
type throughputCell struct {
	store                    string
	conc                     int
	baseRate, tgtRate        []float64
	baseCPU, tgtCPU          []float64
	tgtP50, tgtP99, baseP99  []float64
	rateAll, rateClean       []float64
	cpuAll, cpuClean         []float64
	noisy, runs, errs, pairs int
}

func (r *report) throughputCells() []*throughputCell {
	var cells []*throughputCell
	find := func(store string, conc int) *throughputCell {
		for _, c := range cells {
			if c.store == store && c.conc == conc {
				return c
			}
		}
		c := &throughputCell{store: store, conc: conc}
		cells = append(cells, c)
		return c
	}
	for _, t := range r.throughput {
		c := find(t.store, t.conc)
		for _, run := range t.file.Runs {
			c.runs++
			c.errs += int(run.Errors)
			if run.Machine.Noisy {
				c.noisy++
			}
			cpu := 0.0
			if run.Server != nil {
				cpu = run.Server.PerOpUs
			}
			if run.Label == "baseline" {
				c.baseRate, c.baseCPU, c.baseP99 = append(c.baseRate, run.Rate), append(c.baseCPU, cpu), append(c.baseP99, run.Latency.P99Ms)
			} else {
				c.tgtRate, c.tgtCPU = append(c.tgtRate, run.Rate), append(c.tgtCPU, cpu)
				c.tgtP50, c.tgtP99 = append(c.tgtP50, run.Latency.P50Ms), append(c.tgtP99, run.Latency.P99Ms)
			}
		}
		for _, p := range pairsOf(t.file) {
			c.pairs++
			c.rateAll, c.cpuAll = append(c.rateAll, p.rate), append(c.cpuAll, p.cpu)
			if p.clean {
				c.rateClean, c.cpuClean = append(c.rateClean, p.rate), append(c.cpuClean, p.cpu)
			}
		}
	}
	return cells
}

// best prefers the clean pairs when there are any.
func best(clean, all []float64) (stat, string) {
	if len(clean) > 0 {
		return statOf(clean), fmt.Sprintf("%d clean of %d pairs", len(clean), len(all))
	}
	return statOf(all), fmt.Sprintf("0 clean of %d pairs: all noisy", len(all))
}

func verdict(ok bool) string {
	if ok {
		return "**met**"
	}
	return "**not met**"
}

func (b *bench) writeReport() error {
	r := &b.rep
	if err := os.MkdirAll(b.cfg.plots, 0o755); err != nil {
		return err
	}
	rel, err := filepath.Rel(filepath.Dir(b.cfg.out), b.cfg.plots)
	if err != nil {
		rel = b.cfg.plots
	}
	cells := r.throughputCells()
	if err := plotThroughput(cells, filepath.Join(b.cfg.plots, "throughput.png")); err != nil {
		return err
	}
	if err := plotLatency(r.latency, filepath.Join(b.cfg.plots, "latency-cdf.png")); err != nil {
		return err
	}
	if err := plotMemory(r.memBroker, r.memBaseline, filepath.Join(b.cfg.plots, "memory.png")); err != nil {
		return err
	}

	var w strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&w, format+"\n", a...) }
	mode := "full plan (`make bench`)"
	if r.quick {
		mode = "quick plan (`make bench-quick`): fewer rounds and levels, shorter windows, a smaller fleet; read the full plan's report for decisions"
	}
	p("# dpsbroker benchmarks")
	p("")
	cmdline := b.cfg.cmdline
	if cmdline == "" {
		cmdline = "go run ./cmd/dpsbench -out " + filepath.Base(b.cfg.out)
	}
	p("Generated by `%s` (%s) on %s, in %s.", cmdline, mode,
		r.started.UTC().Format("2006-01-02 15:04 MST"), r.finished.Sub(r.started).Round(time.Second))
	p("Everything ran on this one machine over 127.0.0.1: the broker, Redis, the baseline and the load generator share its cores,")
	p("so absolute rates are roughly half of what a broker with the machine to itself would do. **The ratios to the same-run baseline are the figures to read.**")
	p("Where the time and memory go (CPU and allocation profiles, what was changed): [PROFILING.md](PROFILING.md).")
	p("")
	p("## Machine")
	p("")
	m := r.machine
	p("| CPU | cores (GOMAXPROCS) | memory | kernel | Go | OS/arch |")
	p("|---|---|---|---|---|---|")
	p("| %s | %d (%d) | %.1f GiB | %s | %s | %s/%s |", m.CPUModel, m.NumCPU, m.GOMAXPROCS, float64(m.MemTotal)/(1<<30), m.Kernel, m.GoVersion, m.OS, m.Arch)
	p("")

	// Summary against the targets.
	p("## Targets")
	p("")
	p("| target | measured | baseline beside it | verdict |")
	p("|---|---|---|---|")
	for _, store := range []string{"embedded", "redis"} {
		var all, clean []float64
		var desc []string
		for _, c := range cells {
			if c.store != store {
				continue
			}
			all, clean = append(all, c.rateAll...), append(clean, c.rateClean...)
			s, _ := best(c.rateClean, c.rateAll)
			desc = append(desc, fmt.Sprintf("c=%d %.2f×", c.conc, s.med))
		}
		s, n := best(clean, all)
		p("| X.509 provisioning rate ≥ %.0f %% of the baseline, %s store (fast path) | paired ratio median %.2f× (%s); %s | baseline = 1.00× in the same rounds (table 1) | %s |",
			targetRateRatio*100, store, s.med, n, strings.Join(desc, ", "), verdict(s.med >= targetRateRatio))
	}
	fast, poll, base := latencyStats(r.latency, "fast"), latencyStats(r.latency, "poll"), latencyStats(r.latency, "baseline")
	p("| CONNECT → assigned p99 < %.0f ms at half the maximum rate (%.0f/s of %.0f/s), fast path | p99 %.1f ms (median of %d runs; TCP+TLS+MQTT: %.1f ms) | baseline p99 %.1f ms (TCP+TLS+MQTT %.1f ms) | %s |",
		targetP99Ms, r.maxRate/2, r.maxRate, fast.p99FromConnect, fast.runs, fast.p99Full, base.p99FromConnect, base.p99Full, verdict(fast.runs > 0 && fast.p99FromConnect < targetP99Ms))
	p("| same, 202 + poll path (polling at once) | p99 %.1f ms (TCP+TLS+MQTT %.1f ms) | as above | reported |", poll.p99FromConnect, poll.p99Full)
	for _, store := range []string{"embedded", "redis"} {
		var all, clean []float64
		for _, c := range cells {
			if c.store == store {
				all, clean = append(all, c.cpuAll...), append(clean, c.cpuClean...)
			}
		}
		s, n := best(clean, all)
		p("| server CPU per X.509 registration ≤ %.2f× the baseline's per exchange, %s store | paired ratio median %.2f× (%s) | baseline = 1.00× | %s |",
			targetCPURatio, store, s.med, n, verdict(s.med > 0 && s.med <= targetCPURatio))
	}
	if r.memBroker != nil && r.memBaseline != nil {
		last := r.memBroker.Points[len(r.memBroker.Points)-1].Connections
		p("| memory per connected idle device ≤ %d KB (judged after a release: collected, free pages returned, as the issue's ~50 KB mochi reference was measured) | **%.1f KB** of RSS per connection at %d connections after a release (Go heap + stack %.1f KB); %.1f KB read 3 s after connecting, before any release | plain mochi (same patched mochi, same TLS): %.1f KB after a release, %.1f KB at 3 s; upstream mochi in notes/perf-baselines.md: ~51 KB after a release | %s |",
			targetIdleBytes>>10, r.memBroker.CollectedBytesPerConnection/1024, last, r.memBroker.CollectedHeapBytesPerConnection/1024, r.memBroker.BytesPerConnection/1024,
			r.memBaseline.CollectedBytesPerConnection/1024, r.memBaseline.BytesPerConnection/1024,
			verdict(r.memBroker.CollectedBytesPerConnection > 0 && r.memBroker.CollectedBytesPerConnection <= targetIdleBytes))
	}
	for _, fc := range r.fleetCells() {
		p("| rate with %s enrollments within %.0f %% of the rate with %s, %s store, %s devices | %.0f/s vs %.0f/s in the same windows: paired ratio %.3f× (%s); server CPU per registration %.3f× | the %s broker beside it | %s |",
			count(fc.large), targetFleetDelta*100, count(fc.small), fc.store, fc.kind, statOf(fc.largeRates).med, statOf(fc.smallRates).med,
			fc.ratio.med, fc.note, fc.cpuRatio.med, count(fc.small), verdict(fc.ratio.med > 0 && abs(fc.ratio.med-1) <= targetFleetDelta))
	}
	p("")
	p("A ratio's range is min–max over the pairs. \"Clean\" pairs are those where neither run was flagged noisy (CPU used by neither side above 0.12 core); when no pair is clean the median over all pairs is shown and says so.")
	p("")

	// 1. Throughput.
	p("## 1. Throughput against concurrency")
	p("")
	p("Closed loop, %s measured after a 1 s warm-up, group devices (a fresh device CA per run, enrolled as a group), key exchange X25519MLKEM768 on both sides, MQTT 3.1.1, fast path on.", b.cfg.window)
	p("Each cell pools %d dpsload `--compare --rounds 2` invocations (baseline and broker in ABBA order), alternating the two stores between invocations.", b.cfg.rounds)
	p("")
	p("![throughput against concurrency](%s)", filepath.ToSlash(filepath.Join(rel, "throughput.png")))
	p("")
	p("| store | c | baseline rate/s | dpsbroker rate/s | paired rate ratio | baseline server µs/op | dpsbroker server µs/op | paired CPU ratio | dpsbroker p50 / p99 ms | baseline p99 ms | noisy runs | errors |")
	p("|---|---|---|---|---|---|---|---|---|---|---|---|")
	for _, c := range cells {
		rs, rn := best(c.rateClean, c.rateAll)
		cs, _ := best(c.cpuClean, c.cpuAll)
		p("| %s | %d | %s | %s | %s [%s] | %.0f | %.0f | %s | %.1f / %.1f | %.1f | %d of %d | %d |", c.store, c.conc,
			statOf(c.baseRate).rate(), statOf(c.tgtRate).rate(), rs.ratio(), rn, stats.Median(c.baseCPU), stats.Median(c.tgtCPU), cs.ratio(),
			stats.Median(c.tgtP50), stats.Median(c.tgtP99), stats.Median(c.baseP99), c.noisy, c.runs, c.errs)
	}
	p("")
	p("Server CPU is the broker's (plus redis-server's for the Redis store) from /proc over the measured window, divided by completed provisionings; the baseline's is its own process's. The baseline is plain mochi-mqtt with the same server certificate, client certificates required and verified against the device root, answering one request per connection (`dpsload serve-baseline`).")
	p("")
	if l := r.filesLine("1"); l != "" {
		p("%s", l)
		p("")
	}

	// 2. Latency.
	p("## 2. Latency at half the maximum rate")
	p("")
	p("Open loop at %.0f/s (half of %.0f/s, the highest median rate of the embedded store in table 1), %s measured, up to 256 provisionings in flight. \"From CONNECT\" runs from sending MQTT CONNECT to reading `assigned`; \"TCP+TLS+MQTT\" from the scheduled start (TCP connect, full mTLS handshake, and any wait for a free worker) to `assigned`.",
		r.maxRate/2, r.maxRate, b.cfg.latWindow)
	p("Each path runs against a fresh broker of its own (embedded store), started after table 1, so neither carries the file table 1 grew. The 202 + poll broker polls at once (`--poll-after 0`): with the default retry-after of 3 s a device spends 3 s more by design.")
	p("")
	p("![latency CDF](%s)", filepath.ToSlash(filepath.Join(rel, "latency-cdf.png")))
	p("")
	p("| path | runs (noisy) | achieved rate/s | from CONNECT p50 / p90 / p99 / p99.9 ms | TCP+TLS+MQTT p50 / p99 ms | server µs/op | errors |")
	p("|---|---|---|---|---|---|---|")
	for _, k := range []struct{ kind, name string }{{"fast", "fast path (200 at once)"}, {"poll", "202 + poll"}, {"baseline", "baseline (plain mochi)"}} {
		s := latencyStats(r.latency, k.kind)
		p("| %s | %d (%d) | %.0f | %.1f / %.1f / %.1f / %.1f | %.1f / %.1f | %.0f | %d |", k.name, s.runs, s.noisy, s.rate,
			s.p50FromConnect, s.p90FromConnect, s.p99FromConnect, s.p999FromConnect, s.p50Full, s.p99Full, s.cpu, s.errs)
	}
	p("")
	p("Figures are medians over the runs of each path.")
	p("")
	if l := r.filesLine("2"); l != "" {
		p("%s", l)
		p("")
	}

	// 3. Memory.
	p("## 3. Memory of connected, idle devices")
	p("")
	p("`dpsload hold --collect` opens device connections (TCP, mTLS, CONNECT with keep-alive 600 s, nothing else) with 32 dialers, in steps; 3 s after each step it reads the server's RSS from /proc (and, for dpsbroker, Go heap and stack in use from /metrics), and with none and with all connections held it reads it again after a release (below). A fresh broker, then the baseline.")
	p("")
	p("![memory against connected devices](%s)", filepath.ToSlash(filepath.Join(rel, "memory.png")))
	p("")
	if r.memBroker != nil && r.memBaseline != nil {
		p("| connections | dpsbroker RSS MB | heap in use MB | stacks MB | goroutines | baseline RSS MB |")
		p("|---|---|---|---|---|---|")
		for i, pt := range r.memBroker.Points {
			bl := "–"
			if i < len(r.memBaseline.Points) {
				bl = fmt.Sprintf("%.1f", float64(r.memBaseline.Points[i].RSSBytes)/1e6)
			}
			p("| %d | %.1f | %.1f | %.1f | %d | %s |", pt.Connections, float64(pt.RSSBytes)/1e6, float64(pt.HeapInuse)/1e6, float64(pt.StackInuse)/1e6, pt.Goroutines, bl)
		}
		p("| **per connection, 3 s after the last step** | **%.1f KB** | heap + stack %.1f KB | | | **%.1f KB** |", r.memBroker.BytesPerConnection/1024, r.memBroker.HeapBytesPerConnection/1024, r.memBaseline.BytesPerConnection/1024)
		p("| **per connection, after a release** | **%.1f KB** | heap + stack %.1f KB | | | **%.1f KB** |", r.memBroker.CollectedBytesPerConnection/1024, r.memBroker.CollectedHeapBytesPerConnection/1024, r.memBaseline.CollectedBytesPerConnection/1024)
		p("")
		p("Per connection = (RSS at the last step − RSS with none) / connections. *After a release* (`--collect`): with none and then with all connections held, dpsload sends the server SIGUSR1, on which dpsbroker and the baseline collect until goroutine stacks stop shrinking and return free pages to the OS (cmd/internal/memrelease), and reads RSS once it has settled: the memory the idle devices need, without the collector's slack. That is how notes/perf-baselines.md measured upstream mochi's ~51 KB, the figure the target was set against. Filling rate: dpsbroker %.0f/s, baseline %.0f/s; failed connections: %d and %d.",
			r.memBroker.ConnectRate, r.memBaseline.ConnectRate, r.memBroker.Failed, r.memBaseline.Failed)
		p("")
		p("The baseline is built from the same mochi as dpsbroker: mochi v2.7.9 with the read-loop patch carried in broker/third_party/mochi (PATCHES.md), which lets an idle connection's read-loop stack shrink from 16 to 8 KB. The 3 s figure is memory right after the connections arrived; held idle for minutes, a broker's RSS rises further between garbage collections (mochi's once-a-second housekeeping allocates ~0.25 KB per connection per second, and the runtime keeps the pages until it collects; `dpsload hold --steady 4m`, or `GOMEMLIMIT` to bound it). Where the bytes go: [PROFILING.md](PROFILING.md#memory-of-an-idle-connection).")
		p("")
	}

	// 4. Fleet size.
	p("## 4. Cost against fleet size")
	p("")
	p("Two brokers of each store kind, one with %s and one with %s extra individual enrollments, **loaded in the same window**: two dpsloads, closed loop c=%d each, prepare on their own and start together through dpsload's start gate (`--ready-file`/`--start-file`), %s windows, fast path, %d rounds. Sequential windows on this shared machine drift by ±10 %%, which decided a 5 %% verdict on its own; loaded at once, both brokers see the same host, and the ratio of their rates in one window is the fleet size's cost (each broker gets the CPU the scheduler gives it, so a broker that needs more CPU per registration completes fewer). Each generator counts the other broker and generator as peers (`--peer-pid` and the start file), not as noise. For Redis both brokers share one redis-server, whose CPU is in both brokers' server µs/op.", count(b.cfg.smallFleet), count(b.cfg.fleet), b.cfg.fleetConc, b.cfg.fleetWindow, b.cfg.fleetRounds)
	p("*Group* devices have no individual enrollment, so every CONNECT makes a negative individual lookup among the fleet before the group decides; *individual* devices are each enrolled individually (their own leaf, created through the admin bulk API before the run), a positive lookup and a thumbprint compare.")
	p("")
	p("**What the fleet entries are:** real, distinct X.509 leaf certificates (own serial, CN = registration ID `fleet-NNNNNNN`, a valid ECDSA P-256 signature from one throwaway CA), stored as enabled individual enrollments. To make a million of them in seconds they share one public key and are made by patching a signed template's serial and CN and signing again (see cmd/dpsbench/seed.go). They are written straight into the embedded store file before its broker starts, and into Redis through the store package (databases 1 and 2), not through the admin API: at 10 enrollments per request a million would take far longer than the benchmark's budget. No fake device ever connects.")
	p("")
	p("| store | devices | fleet | rate/s per run | median rate/s | p99 ms (median) | server µs/op (median) | noisy runs |")
	p("|---|---|---|---|---|---|---|---|")
	for _, fc := range r.fleetCells() {
		for _, side := range []struct {
			size  int
			runs  []loadRun
			rates []float64
		}{{fc.small, fc.smallRuns, fc.smallRates}, {fc.large, fc.largeRuns, fc.largeRates}} {
			var per []string
			var p99, cpu []float64
			noisy := 0
			for _, run := range side.runs {
				per = append(per, fmt.Sprintf("%.0f", run.Rate))
				p99 = append(p99, run.Latency.P99Ms)
				if run.Server != nil {
					cpu = append(cpu, run.Server.PerOpUs)
				}
				if run.Machine.Noisy {
					noisy++
				}
			}
			p("| %s | %s | %s | %s | %.0f | %.1f | %.0f | %d |", fc.store, fc.kind, count(side.size), strings.Join(per, ", "), statOf(side.rates).med, stats.Median(p99), stats.Median(cpu), noisy)
		}
		p("| %s | %s | **%s / %s** | paired rate ratio %s [%s] | | | paired CPU ratio %s | |", fc.store, fc.kind, count(fc.large), count(fc.small), fc.ratio.ratio(), fc.note, fc.cpuRatio.ratio())
	}
	p("")
	if len(r.seeds) > 0 {
		p("Seeding:")
		p("")
		p("| store | enrollments | time | rate/s | size |")
		p("|---|---|---|---|---|")
		for _, s := range r.seeds {
			what := "file"
			if s.store == "redis" {
				what = "redis-server RSS growth"
			}
			p("| %s | %s | %s | %.0f | %.0f MB (%s) |", s.store, count(s.n), s.took.Round(100*time.Millisecond), float64(s.n)/s.took.Seconds(), float64(s.bytes)/1e6, what)
		}
		p("")
	}
	if l := r.filesLine("4"); l != "" {
		p("%s", l)
		p("")
	}

	// Method and commands.
	p("## Method")
	p("")
	p("- Binaries are built from this checkout (`go build ./cmd/dpsbroker ./cmd/dpsload`); redis-server comes from PATH (`--save '' --appendonly no`). One server certificate (ECDSA P-256, leaf + root) serves every broker and baseline, so both sides do the same TLS work; devices present leaf + intermediate (ECDSA P-256).")
	p("- dpsload's client is a minimal MQTT codec (paho costs more CPU than the broker's MQTT work); it verifies the server's chain as a device does. Device keys and certificates are made before each run and not measured.")
	p("- Noise (notes/perf-baselines.md): before every run dpsload waits up to %s for the machine to be under 8 %% busy (`--idle-wait`); each run records the CPU used by neither the server nor the load generator and is flagged noisy above 0.12 core; baseline and broker alternate in ABBA order; ratios are paired within a round, with clean pairs preferred. Noisy runs are counted in every table, not hidden.", b.cfg.idleWait)
	p("- Every run is bounded by its window (and a 30 s timeout per provisioning); the plan by `-limit`. Errors are counted by reason in the JSON results; the tables give their totals.")
	p("- Latency percentiles come from log-linear histograms (< 1 %% error); the CDF plot merges the histograms of each path's runs.")
	p("")
	p("## Commands")
	p("")
	p("`$WORK` is dpsbench's working directory; every dpsload also got `DPSLOAD_ADMIN_TOKEN` and every broker `DPSBROKER_ADMIN_TOKEN` in its environment (the token is never on a command line). `dpsbench seed` is the direct store loader (`go run ./cmd/dpsbench seed -h`).")
	p("")
	p("```")
	seen := map[string]bool{}
	for _, c := range r.commands {
		if !seen[c] {
			seen[c] = true
			p("%s", c)
		}
	}
	p("```")
	return os.WriteFile(b.cfg.out, []byte(w.String()), 0o644)
}

func abs(x float64) float64 {
	if x < 0 {
		return -x
	}
	return x
}

func count(n int) string {
	switch {
	case n >= 1_000_000 && n%1_000_000 == 0:
		return fmt.Sprintf("%dM", n/1_000_000)
	case n >= 1000 && n%1000 == 0:
		return fmt.Sprintf("%dk", n/1000)
	}
	return fmt.Sprint(n)
}

type latStats struct {
	runs, noisy, errs                                               int
	rate, cpu                                                       float64
	p50FromConnect, p90FromConnect, p99FromConnect, p999FromConnect float64
	p50Full, p99Full                                                float64
}

func latencyStats(runs []latencyRun, kind string) latStats {
	var s latStats
	var rate, cpu, a, b, c, d, e, f []float64
	for _, lr := range runs {
		if lr.kind != kind {
			continue
		}
		for _, run := range lr.file.Runs {
			s.runs++
			s.errs += int(run.Errors)
			if run.Machine.Noisy {
				s.noisy++
			}
			rate = append(rate, run.Rate)
			if run.Server != nil {
				cpu = append(cpu, run.Server.PerOpUs)
			}
			a, b, c, d = append(a, run.FromConnect.P50Ms), append(b, run.FromConnect.P90Ms), append(c, run.FromConnect.P99Ms), append(d, run.FromConnect.P999Ms)
			e, f = append(e, run.Latency.P50Ms), append(f, run.Latency.P99Ms)
		}
	}
	s.rate, s.cpu = stats.Median(rate), stats.Median(cpu)
	s.p50FromConnect, s.p90FromConnect, s.p99FromConnect, s.p999FromConnect = stats.Median(a), stats.Median(b), stats.Median(c), stats.Median(d)
	s.p50Full, s.p99Full = stats.Median(e), stats.Median(f)
	return s
}

type fleetCell struct {
	store, kind            string
	small, large           int
	smallRuns, largeRuns   []loadRun
	smallRates, largeRates []float64
	ratio                  stat
	note                   string
	cpuRatio               stat // paired server µs/op, large / small
}

// fleetCells pairs the runs of the small and large fleets within each
// round.
func (r *report) fleetCells() []*fleetCell {
	var cells []*fleetCell
	find := func(store, kind string) *fleetCell {
		for _, c := range cells {
			if c.store == store && c.kind == kind {
				return c
			}
		}
		c := &fleetCell{store: store, kind: kind}
		cells = append(cells, c)
		return c
	}
	type key struct {
		store, kind string
		round       int
	}
	rounds := map[key]map[bool]loadRun{}
	for _, f := range r.fleet {
		c := find(f.store, f.kind)
		if len(f.file.Runs) == 0 {
			continue
		}
		run := f.file.Runs[0]
		large := f.large
		if large {
			c.large = f.size
			c.largeRuns, c.largeRates = append(c.largeRuns, run), append(c.largeRates, run.Rate)
		} else {
			c.small = f.size
			c.smallRuns, c.smallRates = append(c.smallRuns, run), append(c.smallRates, run.Rate)
		}
		k := key{f.store, f.kind, f.round}
		if rounds[k] == nil {
			rounds[k] = map[bool]loadRun{}
		}
		rounds[k][large] = run
	}
	for _, c := range cells {
		var all, clean, cpuAll, cpuClean []float64
		for k, m := range rounds {
			if k.store != c.store || k.kind != c.kind {
				continue
			}
			s, okS := m[false]
			l, okL := m[true]
			if !okS || !okL || s.Rate == 0 {
				continue
			}
			isClean := !s.Machine.Noisy && !l.Machine.Noisy
			all = append(all, l.Rate/s.Rate)
			if isClean {
				clean = append(clean, l.Rate/s.Rate)
			}
			if s.Server != nil && l.Server != nil && s.Server.PerOpUs > 0 {
				cpuAll = append(cpuAll, l.Server.PerOpUs/s.Server.PerOpUs)
				if isClean {
					cpuClean = append(cpuClean, l.Server.PerOpUs/s.Server.PerOpUs)
				}
			}
		}
		c.ratio, c.note = best(clean, all)
		c.cpuRatio, _ = best(cpuClean, cpuAll)
	}
	return cells
}

// Plots: small PNGs (4.5 x 3 inches at 96 dpi).

var palette = []color.Color{
	color.RGBA{R: 0x44, G: 0x44, B: 0x44, A: 0xff}, // baseline: grey
	color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff}, // blue
	color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff}, // red
	color.RGBA{R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff}, // green
}

func addLine(p *plot.Plot, name string, xys plotter.XYs, col color.Color, dashed, points bool) error {
	l, err := plotter.NewLine(xys)
	if err != nil {
		return err
	}
	l.Color, l.Width = col, vg.Points(1.5)
	if dashed {
		l.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
	}
	p.Add(l)
	p.Legend.Add(name, l)
	if points {
		s, err := plotter.NewScatter(xys)
		if err != nil {
			return err
		}
		s.Color, s.Shape, s.Radius = col, draw.CircleGlyph{}, vg.Points(2.5)
		p.Add(s)
	}
	return nil
}

func savePlot(p *plot.Plot, path string, top, left bool) error {
	p.Legend.Top, p.Legend.Left = top, left
	p.Add(plotter.NewGrid())
	return p.Save(6*vg.Inch, 4*vg.Inch, path)
}

func plotThroughput(cells []*throughputCell, path string) error {
	p := plot.New()
	p.Title.Text = "X.509 provisionings per second (on-box, 2 cores shared)"
	p.X.Label.Text = "concurrency (provisionings in flight)"
	p.Y.Label.Text = "completed per second (median)"
	p.X.Scale = plot.LogScale{}
	p.Y.Min = 0
	series := map[string]plotter.XYs{}
	var ticks []plot.Tick
	for _, c := range cells {
		if !slices.ContainsFunc(ticks, func(t plot.Tick) bool { return t.Value == float64(c.conc) }) {
			ticks = append(ticks, plot.Tick{Value: float64(c.conc), Label: fmt.Sprint(c.conc)})
		}
		series[c.store] = append(series[c.store], plotter.XY{X: float64(c.conc), Y: statOf(c.tgtRate).med})
		series["baseline"] = append(series["baseline"], plotter.XY{X: float64(c.conc), Y: statOf(c.baseRate).med})
	}
	// The baseline ran beside both stores: one point per concurrency, the
	// mean of the two medians.
	byX := map[float64][]float64{}
	for _, xy := range series["baseline"] {
		byX[xy.X] = append(byX[xy.X], xy.Y)
	}
	var bl plotter.XYs
	for x, ys := range byX {
		sum := 0.0
		for _, y := range ys {
			sum += y
		}
		bl = append(bl, plotter.XY{X: x, Y: sum / float64(len(ys))})
	}
	sort.Slice(bl, func(i, j int) bool { return bl[i].X < bl[j].X })
	if err := addLine(p, "baseline (plain mochi, same TLS)", bl, palette[0], true, true); err != nil {
		return err
	}
	for i, s := range []string{"embedded", "redis"} {
		if len(series[s]) == 0 {
			continue
		}
		xy := series[s]
		sort.Slice(xy, func(i, j int) bool { return xy[i].X < xy[j].X })
		if err := addLine(p, "dpsbroker, "+s+" store", xy, palette[i+1], false, true); err != nil {
			return err
		}
	}
	p.X.Tick.Marker = plot.ConstantTicks(ticks)
	return savePlot(p, path, false, false)
}

func plotLatency(runs []latencyRun, path string) error {
	p := plot.New()
	p.Title.Text = "CONNECT to assigned, open loop at half the maximum rate"
	p.X.Label.Text = "latency (ms, log scale)"
	p.Y.Label.Text = "fraction of provisionings"
	p.X.Scale, p.X.Tick.Marker = plot.LogScale{}, plot.LogTicks{Prec: -1}
	p.Y.Min, p.Y.Max = 0, 1
	for i, k := range []struct{ kind, name string }{{"baseline", "baseline"}, {"fast", "fast path"}, {"poll", "202 + poll"}} {
		for _, full := range []bool{false, true} {
			merged := map[int64]uint64{}
			var total uint64
			for _, lr := range runs {
				if lr.kind != k.kind {
					continue
				}
				for _, run := range lr.file.Runs {
					l := run.FromConnect
					if full {
						l = run.Latency
					}
					for _, b := range l.Buckets {
						merged[b.UpperNs] += b.Count
						total += b.Count
					}
				}
			}
			if total == 0 {
				continue
			}
			uppers := make([]int64, 0, len(merged))
			for u := range merged {
				uppers = append(uppers, u)
			}
			slices.Sort(uppers)
			var xy plotter.XYs
			var cum uint64
			for _, u := range uppers {
				cum += merged[u]
				ms := float64(u) / 1e6
				if ms <= 0 {
					continue
				}
				xy = append(xy, plotter.XY{X: ms, Y: float64(cum) / float64(total)})
			}
			name := k.name + ", from CONNECT"
			if full {
				name = k.name + ", from TCP connect"
			}
			if err := addLine(p, name, xy, palette[i], full, false); err != nil {
				return err
			}
		}
	}
	return savePlot(p, path, false, false)
}

func plotMemory(broker, baseline *holdFile, path string) error {
	p := plot.New()
	p.Title.Text = "Server RSS against connected idle devices"
	p.X.Label.Text = "connected devices (mTLS, MQTT CONNECT, idle)"
	p.Y.Label.Text = "resident memory (MB)"
	p.X.Min, p.Y.Min = 0, 0
	for i, h := range []struct {
		name string
		f    *holdFile
	}{{"baseline (plain mochi)", baseline}, {"dpsbroker", broker}} {
		if h.f == nil {
			continue
		}
		var xy plotter.XYs
		for _, pt := range h.f.Points {
			xy = append(xy, plotter.XY{X: float64(pt.Connections), Y: float64(pt.RSSBytes) / 1e6})
		}
		name := fmt.Sprintf("%s, 3 s after: %.1f KB/conn", h.name, h.f.BytesPerConnection/1024)
		if err := addLine(p, name, xy, palette[i], i == 0, true); err != nil {
			return err
		}
		if h.f.CollectedNone == nil || h.f.Collected == nil {
			continue
		}
		// The readings after a release: two points, dotted.
		rel := plotter.XYs{
			{X: float64(h.f.CollectedNone.Connections), Y: float64(h.f.CollectedNone.RSSBytes) / 1e6},
			{X: float64(h.f.Collected.Connections), Y: float64(h.f.Collected.RSSBytes) / 1e6},
		}
		l, err := plotter.NewLine(rel)
		if err != nil {
			return err
		}
		l.Color, l.Width, l.Dashes = palette[i], vg.Points(1), []vg.Length{vg.Points(1), vg.Points(2)}
		sc, err := plotter.NewScatter(rel)
		if err != nil {
			return err
		}
		sc.Color, sc.Shape, sc.Radius = palette[i], draw.BoxGlyph{}, vg.Points(2.5)
		p.Add(l, sc)
		p.Legend.Add(fmt.Sprintf("%s, after a release: %.1f KB/conn", h.name, h.f.CollectedBytesPerConnection/1024), l, sc)
	}
	return savePlot(p, path, true, true)
}

// filesLine lists the embedded store files' sizes at the end of part, or
// "" when none was recorded.
func (r *report) filesLine(part string) string {
	var parts []string
	for _, f := range r.files {
		if f.part == part {
			parts = append(parts, fmt.Sprintf("%s %.1f MB", f.broker, float64(f.bytes)/1e6))
		}
	}
	if len(parts) == 0 {
		return ""
	}
	return "Embedded store files (`dpsbroker.db`, size on disk; bbolt grows it in steps) at the end of this part: " + strings.Join(parts, ", ") + "."
}
