package broker_test

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dpsbroker/dpsbroker/broker"
	"github.com/dpsbroker/dpsbroker/broker/brokertest"
	"github.com/dpsbroker/dpsbroker/provisioning/wire"
)

// idleHelperEnv makes the test binary a client process that holds idle
// device connections (TestIdleClientsHelper), so that the benchmark's own
// memory is the broker's alone.
const idleHelperEnv = "DPSBROKER_IDLE_HELPER"

// idleDevice is one device identity handed to the helper process.
type idleDevice struct {
	ID    string `json:"id"`
	Chain []byte `json:"chain"`
	Key   []byte `json:"key"`
}

type idleJob struct {
	Addr     string       `json:"addr"`
	Scope    string       `json:"scope"`
	ServerCA []byte       `json:"serverCa"`
	Devices  []idleDevice `json:"devices"`
}

// BenchmarkIdleConnectionMemory measures the broker's memory per connected
// idle device: N devices (DPSBROKER_IDLE_CONNS, default 2000) connect over
// mTLS from a child process, CONNECT (MQTT 3.1.1, keepalive 240 s) and
// SUBSCRIBE to the response filter, then stay idle. B/conn is the growth
// of HeapInuse + StackInuse after garbage collection (steady state: stacks
// grown by the TLS handshake shrink over a few collections), divided by
// N; heap-B/conn and stack-B/conn split it. idle-alloc-B/s/conn is what
// the idle broker allocates per connection and second while they are held
// (mochi's once-a-second housekeeping): the garbage that makes RSS settle
// above the live figure (PROFILING.md). DPSBROKER_IDLE_HEAPPROFILE names a
// file for a heap profile taken with the connections held.
//
//	go test -run '^$' -bench BenchmarkIdleConnectionMemory -benchtime 1x ./broker/
func BenchmarkIdleConnectionMemory(b *testing.B) {
	n := 2000
	if v := os.Getenv("DPSBROKER_IDLE_CONNS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n <= 0 {
			b.Fatalf("DPSBROKER_IDLE_CONNS=%q", v)
		}
	}
	f := newIdleFixture(b, n)
	var perConn, heapPer, stackPer, gorPer, allocPer float64
	b.ResetTimer()
	for range b.N {
		m := f.hold(b, true)
		perConn += m.heap + m.stack
		heapPer += m.heap
		stackPer += m.stack
		gorPer += m.goroutines
		allocPer += m.idleAlloc
	}
	b.StopTimer()
	b.ReportMetric(perConn/float64(b.N), "B/conn")
	b.ReportMetric(heapPer/float64(b.N), "heap-B/conn")
	b.ReportMetric(stackPer/float64(b.N), "stack-B/conn")
	b.ReportMetric(gorPer/float64(b.N), "goroutines/conn")
	b.ReportMetric(allocPer/float64(b.N), "idle-alloc-B/s/conn")
}

// TestIdleConnectionStacks checks that an idle device's two goroutines
// (mochi's read and write loops) settle in 8 KB + 2-4 KB once collections
// have shrunk the stacks the handshake and the packet paths grew: a read
// loop that cannot shrink below 16 KB (upstream mochi, whose idle read
// frames hold 800-byte packets) gives 18-24 KB. It guards the patch in
// broker/third_party/mochi.
//
// The race detector enlarges every frame (24 KB per connection with or
// without the patch), so under -race this test has nothing to check;
// dpstest runs it once more without -race.
func TestIdleConnectionStacks(t *testing.T) {
	if raceEnabled {
		t.Skip("stack sizes under -race are not those of a normal build; dpstest runs this test without -race")
	}
	const n = 200
	m := newIdleFixture(t, n).hold(t, false)
	if m.goroutines < 1.9 || m.goroutines > 2.1 {
		t.Fatalf("%.2f goroutines per idle connection, want 2 (read and write loop)", m.goroutines)
	}
	if m.stack > 14<<10 {
		t.Fatalf("%.0f B of stack per idle connection, want at most 12 KB (read loop 8 KB + write loop 2-4 KB): is the mochi patch (broker/third_party/mochi/PATCHES.md) in place?", m.stack)
	}
	t.Logf("idle connection: %.0f B stack, %.0f B heap", m.stack, m.heap)
}

// idleFixture is a broker with n enrolled devices whose identities a child
// process (TestIdleClientsHelper) uses to hold idle connections.
type idleFixture struct {
	tb      *brokertest.Broker
	n       int
	jobFile string
}

func newIdleFixture(t testing.TB, n int) *idleFixture {
	tb := brokertest.New(t, brokertest.WithConfig(func(c *broker.Config) {
		c.LogLevel = "error"
		c.MaxConnections = 0
	}))
	factory := tb.EnrollGroup(t, "idle")
	job := idleJob{Addr: tb.MQTTAddr(), Scope: tb.IDScope(), ServerCA: tb.ServerCA.CertPEM()}
	for i := range n {
		dev := tb.MintDevice(t, factory, fmt.Sprintf("idle-%05d", i))
		job.Devices = append(job.Devices, idleDevice{ID: dev.Cert.Subject.CommonName, Chain: dev.ChainPEM(), Key: dev.KeyPEM()})
	}
	jobFile := filepath.Join(t.TempDir(), "job.json")
	data, _ := json.Marshal(job)
	if err := os.WriteFile(jobFile, data, 0o600); err != nil {
		t.Fatal(err)
	}
	// Warm up: one provisioning, so that lazily built state (pools,
	// caches) is not charged to the idle connections.
	if _, err := tb.Provision(t.Context(), tb.MintDevice(t, factory, "warm")); err != nil {
		t.Fatal(err)
	}
	return &idleFixture{tb: tb, n: n, jobFile: jobFile}
}

// idleMeasure is the broker's growth per held connection.
type idleMeasure struct {
	heap, stack, goroutines float64
	idleAlloc               float64 // B/s, when measured
}

// hold has the helper process connect every device, measures the broker
// with the connections held, and lets them go.
func (f *idleFixture) hold(t testing.TB, allocRate bool) idleMeasure {
	heap0, stack0, g0 := brokerMemory()
	cmd := exec.Command(os.Args[0], "-test.run=^TestIdleClientsHelper$", "-test.v")
	cmd.Env = append(os.Environ(), idleHelperEnv+"="+f.jobFile)
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if line := sc.Text(); line == "ready" {
				ready <- nil
				_, _ = io.Copy(io.Discard, stdout)
				return
			} else if len(line) > 6 && line[:6] == "error:" {
				ready <- fmt.Errorf("helper: %s", line)
				return
			}
		}
		ready <- fmt.Errorf("helper ended before it was ready")
	}()
	select {
	case err := <-ready:
		if err != nil {
			_ = cmd.Process.Kill()
			t.Fatal(err)
		}
	case <-time.After(5 * time.Minute):
		_ = cmd.Process.Kill()
		t.Fatal("helper not ready after 5 minutes")
	}
	if got := atomic.LoadInt64(&f.tb.B.MQTTServer().Info.ClientsConnected); got < int64(f.n) {
		t.Logf("only %d clients connected", got)
	}
	heap1, stack1, g1 := brokerMemory()
	var m idleMeasure
	if allocRate {
		m.idleAlloc = idleAllocRate() / float64(f.n)
	}
	if p := os.Getenv("DPSBROKER_IDLE_HEAPPROFILE"); p != "" {
		writeHeapProfile(t, p)
	}
	m.heap = (float64(heap1) - float64(heap0)) / float64(f.n)
	m.stack = (float64(stack1) - float64(stack0)) / float64(f.n)
	m.goroutines = float64(g1-g0) / float64(f.n)
	_ = stdin.Close() // the helper exits when its stdin closes
	_ = cmd.Wait()
	// Let the broker drop the sessions before the next round.
	deadline := time.Now().Add(30 * time.Second)
	for atomic.LoadInt64(&f.tb.B.MQTTServer().Info.ClientsConnected) > 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	return m
}

// idleAllocWindow is how long idle allocation is counted: several of
// mochi's one-second housekeeping rounds.
const idleAllocWindow = 5 * time.Second

// idleAllocRate returns the bytes allocated per second by this process
// (the broker; the clients are in the helper process) over
// idleAllocWindow.
func idleAllocRate() float64 {
	var a, z runtime.MemStats
	runtime.ReadMemStats(&a)
	time.Sleep(idleAllocWindow)
	runtime.ReadMemStats(&z)
	return float64(z.TotalAlloc-a.TotalAlloc) / idleAllocWindow.Seconds()
}

// writeHeapProfile writes the in-use heap with the connections held, to
// see where the bytes per connection go (go tool pprof -sample_index
// inuse_space).
func writeHeapProfile(t testing.TB, path string) {
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := pprof.WriteHeapProfile(f); err != nil {
		t.Fatal(err)
	}
}

// brokerMemory collects garbage until stacks stop shrinking (the GC
// halves an oversized stack at most once per cycle) and returns
// HeapInuse, StackInuse and the goroutine count.
func brokerMemory() (heap, stack uint64, goroutines int) {
	var ms runtime.MemStats
	var last uint64
	for i := 0; i < 8; i++ {
		runtime.GC()
		runtime.ReadMemStats(&ms)
		if i > 2 && ms.StackInuse == last {
			break
		}
		last = ms.StackInuse
	}
	return ms.HeapInuse, ms.StackInuse, runtime.NumGoroutine()
}

// TestIdleClientsHelper is not a test: run by BenchmarkIdleConnectionMemory
// in a child process, it opens the job's device connections, prints
// "ready" and holds them until stdin closes. Without the environment
// variable it returns at once.
func TestIdleClientsHelper(t *testing.T) {
	jobFile := os.Getenv(idleHelperEnv)
	if jobFile == "" {
		return
	}
	fail := func(err error) {
		fmt.Printf("error: %v\n", err)
		os.Exit(1)
	}
	data, err := os.ReadFile(jobFile)
	if err != nil {
		fail(err)
	}
	var job idleJob
	if err := json.Unmarshal(data, &job); err != nil {
		fail(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(job.ServerCA)
	var (
		next  atomic.Int64
		mu    sync.Mutex
		conns []*tls.Conn
		first error
		wg    sync.WaitGroup
	)
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= len(job.Devices) {
					return
				}
				c, err := idleConnect(job, roots, job.Devices[i])
				mu.Lock()
				if err != nil && first == nil {
					first = fmt.Errorf("%s: %w", job.Devices[i].ID, err)
				}
				if c != nil {
					conns = append(conns, c)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if first != nil {
		fail(first)
	}
	fmt.Println("ready")
	_, _ = io.Copy(io.Discard, os.Stdin)
	for _, c := range conns {
		_ = c.Close()
	}
	os.Exit(0)
}

// idleConnect opens one device session the way the C SDK does (MQTT
// 3.1.1, clean session) and subscribes to the response filter.
func idleConnect(job idleJob, roots *x509.CertPool, d idleDevice) (*tls.Conn, error) {
	cert, err := tls.X509KeyPair(d.Chain, d.Key)
	if err != nil {
		return nil, err
	}
	c, err := tls.Dial("tcp", job.Addr, &tls.Config{RootCAs: roots, ServerName: "localhost", Certificates: []tls.Certificate{cert}})
	if err != nil {
		return nil, err
	}
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	user := wire.FormatUsername(job.Scope, d.ID, "", "")
	var vh []byte
	vh = appendMQTTString(vh, "MQTT")
	vh = append(vh, 4, 0x82, 0, 240) // level 4, clean session + username, keepalive 240 s
	vh = appendMQTTString(vh, d.ID)
	vh = appendMQTTString(vh, user)
	if err := writePacket(c, 0x10, vh); err != nil {
		return nil, err
	}
	var connack [4]byte
	if _, err := io.ReadFull(c, connack[:]); err != nil || connack[0] != 0x20 || connack[3] != 0 {
		_ = c.Close()
		return nil, fmt.Errorf("CONNACK %x: %v", connack, err)
	}
	sub := appendMQTTString([]byte{0, 1}, wire.ResponseFilter)
	sub = append(sub, 1)
	if err := writePacket(c, 0x82, sub); err != nil {
		return nil, err
	}
	var suback [5]byte
	if _, err := io.ReadFull(c, suback[:]); err != nil || suback[0] != 0x90 || suback[4] != 1 {
		_ = c.Close()
		return nil, fmt.Errorf("SUBACK %x: %v", suback, err)
	}
	_ = c.SetDeadline(time.Time{})
	return c, nil
}

func appendMQTTString(b []byte, s string) []byte {
	return append(append(b, byte(len(s)>>8), byte(len(s))), s...)
}

// writePacket writes a fixed header (remaining length < 16384) and body.
func writePacket(w io.Writer, first byte, body []byte) error {
	n := len(body)
	hdr := []byte{first}
	for {
		b := byte(n % 128)
		n /= 128
		if n > 0 {
			b |= 0x80
		}
		hdr = append(hdr, b)
		if n == 0 {
			break
		}
	}
	_, err := w.Write(append(hdr, body...))
	return err
}
