// Package sysstat reads the CPU and memory figures a benchmark needs to be
// honest about where the time went: a server process's CPU from
// /proc/<pid>/stat or from its Prometheus endpoint, the load generator's
// own CPU from getrusage, and the whole machine's busy time from
// /proc/stat, so that CPU used by neither side (other tenants, interrupts)
// can be reported as noise. Linux only; elsewhere the readers fail and
// callers leave the figures out.
package sysstat

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// clockTicks is USER_HZ, the unit of /proc CPU times. It is 100 on every
// Linux architecture Go supports; the kernel exposes it to user space only
// through sysconf, which would need cgo.
const clockTicks = 100

// ProcSample is a process's cumulative CPU time and its resident memory.
type ProcSample struct {
	CPU time.Duration
	RSS uint64 // bytes
}

// ReadProc reads /proc/<pid>/stat.
func ReadProc(pid int) (ProcSample, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return ProcSample{}, err
	}
	return parseProcStat(b)
}

// parseProcStat extracts utime, stime (fields 14, 15) and rss (field 24,
// in pages) from a /proc/<pid>/stat line. The command name (field 2) may
// contain spaces and parentheses, so fields are counted after its last ')'.
func parseProcStat(b []byte) (ProcSample, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return ProcSample{}, errors.New("sysstat: malformed /proc/<pid>/stat")
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state), so field n is f[n-3].
	if len(f) < 22 {
		return ProcSample{}, errors.New("sysstat: short /proc/<pid>/stat")
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	rss, err3 := strconv.ParseUint(f[21], 10, 64)
	if err := errors.Join(err1, err2, err3); err != nil {
		return ProcSample{}, fmt.Errorf("sysstat: /proc/<pid>/stat: %w", err)
	}
	return ProcSample{
		CPU: time.Duration(ut+st) * time.Second / clockTicks,
		RSS: rss * uint64(os.Getpagesize()),
	}, nil
}

// SelfCPU is the CPU time (user + system) this process has used, all
// threads included.
func SelfCPU() (time.Duration, error) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, err
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), nil
}

// MachineSample is the cumulative CPU time of the whole machine, all cores
// summed: Busy (everything but idle and iowait) and Total.
type MachineSample struct {
	Busy, Total time.Duration
}

// ReadMachine reads the first line of /proc/stat.
func ReadMachine() (MachineSample, error) {
	f, err := os.Open("/proc/stat")
	if err != nil {
		return MachineSample{}, err
	}
	defer func() { _ = f.Close() }()
	line, err := bufio.NewReader(f).ReadString('\n')
	if err != nil {
		return MachineSample{}, err
	}
	return parseMachine(line)
}

func parseMachine(line string) (MachineSample, error) {
	f := strings.Fields(line)
	if len(f) < 5 || f[0] != "cpu" {
		return MachineSample{}, errors.New("sysstat: malformed /proc/stat")
	}
	var total, idle uint64
	// user nice system idle iowait irq softirq steal (guest is already in user).
	for i, s := range f[1:min(len(f), 9)] {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return MachineSample{}, fmt.Errorf("sysstat: /proc/stat: %w", err)
		}
		total += v
		if i == 3 || i == 4 {
			idle += v
		}
	}
	return MachineSample{
		Busy:  time.Duration(total-idle) * time.Second / clockTicks,
		Total: time.Duration(total) * time.Second / clockTicks,
	}, nil
}

// ScrapeProcess reads process_cpu_seconds_total and
// process_resident_memory_bytes from a Prometheus text endpoint (the
// standard process collector). A missing metric is an error, so that a
// wrong URL does not silently report zero.
func ScrapeProcess(ctx context.Context, client *http.Client, url string) (ProcSample, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return ProcSample{}, err
	}
	req.Header.Set("Accept", "text/plain")
	resp, err := client.Do(req)
	if err != nil {
		return ProcSample{}, err
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return ProcSample{}, fmt.Errorf("sysstat: %s: %s", url, resp.Status)
	}
	return parseMetrics(io.LimitReader(resp.Body, 8<<20))
}

func parseMetrics(r io.Reader) (ProcSample, error) {
	var s ProcSample
	var haveCPU, haveRSS bool
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		name, val, ok := strings.Cut(sc.Text(), " ")
		if !ok || strings.HasPrefix(name, "#") {
			continue
		}
		switch name {
		case "process_cpu_seconds_total":
			v, err := strconv.ParseFloat(strings.Fields(val)[0], 64)
			if err != nil {
				return ProcSample{}, fmt.Errorf("sysstat: %s: %w", name, err)
			}
			s.CPU, haveCPU = time.Duration(v*float64(time.Second)), true
		case "process_resident_memory_bytes":
			v, err := strconv.ParseFloat(strings.Fields(val)[0], 64)
			if err != nil {
				return ProcSample{}, fmt.Errorf("sysstat: %s: %w", name, err)
			}
			s.RSS, haveRSS = uint64(v), true
		}
	}
	if err := sc.Err(); err != nil {
		return ProcSample{}, err
	}
	if !haveCPU || !haveRSS {
		return ProcSample{}, errors.New("sysstat: process_cpu_seconds_total or process_resident_memory_bytes missing (is the process collector registered?)")
	}
	return s, nil
}

// Machine describes the machine a result was measured on.
type Machine struct {
	Hostname   string `json:"hostname,omitempty"`
	OS         string `json:"os"`
	Arch       string `json:"arch"`
	Kernel     string `json:"kernel,omitempty"`
	CPUModel   string `json:"cpuModel,omitempty"`
	NumCPU     int    `json:"numCPU"`
	GOMAXPROCS int    `json:"gomaxprocs"`
	GoVersion  string `json:"goVersion"`
	MemTotal   uint64 `json:"memTotalBytes,omitempty"`
}

// Describe collects machine information; missing pieces stay empty.
func Describe() Machine {
	m := Machine{
		OS: runtime.GOOS, Arch: runtime.GOARCH, NumCPU: runtime.NumCPU(),
		GOMAXPROCS: runtime.GOMAXPROCS(0), GoVersion: runtime.Version(),
	}
	m.Hostname, _ = os.Hostname()
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.Lines(string(b)) {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for line := range strings.Lines(string(b)) {
			if rest, ok := strings.CutPrefix(line, "MemTotal:"); ok {
				f := strings.Fields(rest)
				if len(f) > 0 {
					if kb, err := strconv.ParseUint(f[0], 10, 64); err == nil {
						m.MemTotal = kb << 10
					}
				}
			}
		}
	}
	return m
}
