package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func fakeRun(label string, round int, rate, cpu float64, noisy bool) loadRun {
	r := loadRun{Label: label, Round: round, Rate: rate, Completed: int64(rate * 5)}
	r.Server = &struct {
		PerOpUs float64 `json:"cpuPerRegistrationUs"`
		Cores   float64 `json:"cores"`
		RSSEnd  uint64  `json:"rssEndBytes"`
		Error   string  `json:"error"`
	}{PerOpUs: cpu}
	r.Machine.Noisy = noisy
	r.Latency = latency{Count: 10, P50Ms: 10, P99Ms: 30, Buckets: []bucket{{UpperNs: 5e6, Count: 5}, {UpperNs: 20e6, Count: 5}}}
	r.FromConnect = latency{Count: 10, P50Ms: 5, P99Ms: 20, Buckets: []bucket{{UpperNs: 2e6, Count: 5}, {UpperNs: 9e6, Count: 5}}}
	return r
}

func TestPairsPreferClean(t *testing.T) {
	f := &loadFile{Runs: []loadRun{
		fakeRun("baseline", 1, 1000, 900, false), fakeRun("target", 1, 950, 990, false),
		fakeRun("target", 2, 400, 2000, true), fakeRun("baseline", 2, 1000, 900, false),
	}}
	ps := pairsOf(f)
	if len(ps) != 2 {
		t.Fatalf("%d pairs", len(ps))
	}
	var all, clean []float64
	for _, p := range ps {
		all = append(all, p.rate)
		if p.clean {
			clean = append(clean, p.rate)
		}
	}
	s, note := best(clean, all)
	if s.med != 0.95 || !strings.HasPrefix(note, "1 clean of 2") {
		t.Errorf("best %+v %q", s, note)
	}
}

// TestWriteReport renders every section and plot from synthetic results.
func TestWriteReport(t *testing.T) {
	dir := t.TempDir()
	if d := os.Getenv("DPSBENCH_REPORT_DIR"); d != "" {
		dir = d // to look at the rendering
	}
	b := &bench{cfg: config{out: filepath.Join(dir, "BENCHMARKS.md"), plots: filepath.Join(dir, "plots"), window: 5 * time.Second, fleetWindow: 10 * time.Second, latWindow: 8 * time.Second, rounds: 1, smallFleet: 1000, fleet: 1_000_000}}
	cmp := func(rate float64) *loadFile {
		return &loadFile{Runs: []loadRun{fakeRun("baseline", 1, 1000, 900, false), fakeRun("target", 1, rate, 1000, false)}}
	}
	r := &b.rep
	r.started, r.finished = time.Now(), time.Now().Add(time.Minute)
	for _, c := range []int{4, 16, 64} {
		r.throughput = append(r.throughput, throughputRun{"embedded", c, cmp(920)}, throughputRun{"redis", c, cmp(880)})
	}
	r.maxRate = 920
	for _, k := range []string{"baseline", "fast", "poll"} {
		r.latency = append(r.latency, latencyRun{k, &loadFile{Runs: []loadRun{fakeRun("target", 0, 460, 1000, false)}}})
	}
	h := &holdFile{BytesPerConnection: 50000}
	h.Points = append(h.Points, struct {
		Connections int    `json:"connections"`
		RSSBytes    uint64 `json:"rssBytes"`
		HeapInuse   uint64 `json:"heapInuseBytes"`
		StackInuse  uint64 `json:"stackInuseBytes"`
		Goroutines  uint64 `json:"goroutines"`
	}{0, 30e6, 4e6, 1e6, 16}, struct {
		Connections int    `json:"connections"`
		RSSBytes    uint64 `json:"rssBytes"`
		HeapInuse   uint64 `json:"heapInuseBytes"`
		StackInuse  uint64 `json:"stackInuseBytes"`
		Goroutines  uint64 `json:"goroutines"`
	}{1000, 80e6, 40e6, 20e6, 2016})
	h.CollectedNone, h.Collected = &collectedPoint{0, 15e6}, &collectedPoint{1000, 50e6}
	h.CollectedBytesPerConnection = 35e3
	r.memBroker, r.memBaseline = h, h
	for _, kind := range []string{"group", "individual"} {
		for round := 1; round <= 2; round++ {
			r.fleet = append(r.fleet,
				fleetRun{store: "embedded", kind: kind, size: 1000, round: round, file: &loadFile{Runs: []loadRun{fakeRun("target", 0, 500, 1000, false)}}},
				fleetRun{store: "embedded", kind: kind, size: 1_000_000, round: round, large: true, file: &loadFile{Runs: []loadRun{fakeRun("target", 0, 490, 1050, false)}}})
		}
	}
	r.seeds = []seedResult{{"embedded", 1_000_000, time.Minute, 1 << 30}}
	r.commands = []string{"dpsload --x 1", "dpsload --x 1", "dpsload --y 2"}
	if err := b.writeReport(); err != nil {
		t.Fatal(err)
	}
	md, err := os.ReadFile(b.cfg.out)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"paired ratio median 0.92×", "0.980×", "server CPU per registration 1.050×", "paired CPU ratio 1.05×", "![latency CDF](plots/latency-cdf.png)", "| 1000 | 80.0 |"} {
		if !strings.Contains(string(md), want) {
			t.Errorf("report lacks %q", want)
		}
	}
	if strings.Count(string(md), "dpsload --x 1") != 1 {
		t.Error("commands are not deduplicated")
	}
	for _, png := range []string{"throughput.png", "latency-cdf.png", "memory.png"} {
		st, err := os.Stat(filepath.Join(b.cfg.plots, png))
		if err != nil || st.Size() == 0 || st.Size() > 200<<10 {
			t.Errorf("%s: %v, %d bytes", png, err, st.Size())
		}
	}
}
