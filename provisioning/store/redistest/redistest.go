// Package redistest runs a real redis-server for tests.
//
// Tests never use an in-memory imitation of Redis: the store's guarantees
// (Lua atomicity, pub/sub delivery, GETDEL, TTLs, dropped connections) are
// exactly what such imitations get subtly wrong. The package speaks raw RESP
// over TCP and imports no Redis client, so any package can use it.
//
// A test that needs its own server (to stop or restart it) calls Start. A
// package whose tests only need some Redis calls Shared, which starts one
// server per test binary, and gives each test a fresh database with NewDB
// or its own key prefix. Pub/sub channels are global across databases, so
// tests that subscribe must also use distinct channel names.
package redistest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// InstallHint is the message a test fails with when redis-server is missing.
const InstallHint = "redis-server not found on PATH; install it with: apt-get install -y redis-server"

// Databases is how many logical databases every server offers, so that
// NewDB can hand a fresh one to each test of a package.
const Databases = 1024

const (
	startAttempts = 5
	readyTimeout  = 10 * time.Second
)

// Server is one redis-server process on 127.0.0.1. Its methods are safe for
// concurrent use.
type Server struct {
	addr string
	port int
	dir  string

	mu     sync.Mutex
	proc   *process
	nextDB atomic.Int64
}

// process is one run of redis-server; Restart makes a new one on the same
// port.
type process struct {
	cmd  *exec.Cmd
	out  *lockedBuffer
	done chan struct{} // closed when the process has exited
}

// Start runs a redis-server on a free loopback port for the calling test
// and stops it when the test ends. It fails the test (never skips) when
// redis-server is not installed.
func Start(tb testing.TB) *Server {
	tb.Helper()
	s, err := start(tb.TempDir())
	if err != nil {
		tb.Fatalf("redistest: %v", err)
	}
	tb.Cleanup(s.Stop)
	return s
}

var shared struct {
	once sync.Once
	srv  *Server
	dir  string
	err  error
}

// Shared returns the server shared by every test of this test binary,
// starting it on first use. Stop it at the end of the run by calling Main
// from TestMain; without that it dies with the test process anyway (the
// child gets SIGKILL when its parent exits). Do not Stop or Restart the
// shared server from a test.
func Shared(tb testing.TB) *Server {
	tb.Helper()
	shared.once.Do(func() {
		dir, err := os.MkdirTemp("", "redistest-")
		if err != nil {
			shared.err = err
			return
		}
		shared.dir = dir
		shared.srv, shared.err = start(dir)
	})
	if shared.err != nil {
		tb.Fatalf("redistest: %v", shared.err)
	}
	return shared.srv
}

// Main runs the tests and then stops the shared server. Call it from
// TestMain: func TestMain(m *testing.M) { redistest.Main(m) }.
func Main(m *testing.M) {
	code := m.Run()
	if shared.srv != nil {
		shared.srv.Stop()
	}
	if shared.dir != "" {
		_ = os.RemoveAll(shared.dir)
	}
	os.Exit(code)
}

// Addr is the server's "127.0.0.1:port". It stays the same across Restart.
func (s *Server) Addr() string { return s.addr }

// NewDB returns a database number no other caller of NewDB on this server
// got, and flushes it when the test ends. Database 0 is never handed out.
func (s *Server) NewDB(tb testing.TB) int {
	tb.Helper()
	db := int(s.nextDB.Add(1))
	if db >= Databases {
		tb.Fatalf("redistest: all %d databases handed out", Databases)
	}
	tb.Cleanup(func() {
		// Best effort: the server may already be stopped.
		_, _ = s.DoDB(db, "FLUSHDB")
	})
	return db
}

// Stop kills the server and waits for it to exit. It is idempotent.
func (s *Server) Stop() {
	s.mu.Lock()
	p := s.proc
	s.mu.Unlock()
	if p == nil {
		return
	}
	_ = p.cmd.Process.Kill()
	<-p.done
}

// Restart stops the server and starts a new, empty one on the same port, so
// that clients see their connections drop and can reconnect to the same
// address. It fails the test if the port cannot be bound again.
func (s *Server) Restart(tb testing.TB) {
	tb.Helper()
	s.Stop()
	deadline := time.Now().Add(readyTimeout)
	for {
		p, err := s.launch()
		if err == nil {
			s.mu.Lock()
			s.proc = p
			s.mu.Unlock()
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("redistest: restart on %s: %v", s.addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Do sends one command to database 0 on a fresh connection and returns the
// reply: a string for simple and bulk strings, int64 for integers, nil for
// a null, []any for arrays. A Redis error reply is returned as an error.
func (s *Server) Do(args ...string) (any, error) { return s.DoDB(0, args...) }

// DoDB is Do on database db.
func (s *Server) DoDB(db int, args ...string) (any, error) {
	c, err := net.DialTimeout("tcp", s.addr, 2*time.Second)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	if db != 0 {
		if _, err := roundTrip(c, r, "SELECT", strconv.Itoa(db)); err != nil {
			return nil, err
		}
	}
	return roundTrip(c, r, args...)
}

// start launches redis-server on a free port, retrying with another port
// when the one picked was taken in between (the bind race of "listen on :0,
// close, hand the port over").
func start(dir string) (*Server, error) {
	if _, err := exec.LookPath("redis-server"); err != nil {
		return nil, errors.New(InstallHint)
	}
	var lastErr error
	for range startAttempts {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		s := &Server{addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), port: port, dir: dir}
		p, err := s.launch()
		if err == nil {
			s.proc = p
			return s, nil
		}
		lastErr = err
	}
	return nil, fmt.Errorf("start redis-server after %d attempts: %w", startAttempts, lastErr)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// launch starts one redis-server process on s.port and waits until it
// answers PING.
func (s *Server) launch() (*process, error) {
	out := &lockedBuffer{}
	cmd := exec.Command("redis-server",
		"--port", strconv.Itoa(s.port),
		"--bind", "127.0.0.1",
		"--save", "",
		"--appendonly", "no",
		"--dir", s.dir,
		"--databases", strconv.Itoa(Databases),
		"--protected-mode", "no",
	)
	cmd.Stdout = out
	cmd.Stderr = out
	// Kill the server when the test process dies, even if nothing calls
	// Stop (a panicking test, a shared server without Main).
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	p := &process{cmd: cmd, out: out, done: make(chan struct{})}

	started := make(chan error, 1)
	go func() {
		// Pdeathsig fires when the *thread* that forked the child exits.
		// Keep this goroutine on its own thread for the child's whole life
		// so the signal fires only when the process ends.
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			close(p.done)
			return
		}
		started <- nil
		_ = cmd.Wait()
		close(p.done)
	}()
	if err := <-started; err != nil {
		return nil, fmt.Errorf("start redis-server: %w", err)
	}

	deadline := time.Now().Add(readyTimeout)
	for {
		select {
		case <-p.done:
			return nil, fmt.Errorf("redis-server on port %d exited early: %s", s.port, strings.TrimSpace(out.String()))
		default:
		}
		if err := ping(s.addr); err == nil {
			return p, nil
		} else if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			<-p.done
			return nil, fmt.Errorf("redis-server on port %d not ready after %v: %w; output: %s", s.port, readyTimeout, err, strings.TrimSpace(out.String()))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func ping(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	v, err := roundTrip(c, bufio.NewReader(c), "PING")
	if err != nil {
		return err
	}
	if v != "PONG" {
		return fmt.Errorf("PING answered %v", v)
	}
	return nil
}

// roundTrip writes one command as a RESP array of bulk strings and reads
// one reply.
func roundTrip(w io.Writer, r *bufio.Reader, args ...string) (any, error) {
	var b bytes.Buffer
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := w.Write(b.Bytes()); err != nil {
		return nil, err
	}
	return readReply(r)
}

// ReplyError is an error reply from Redis ("-ERR ...").
type ReplyError string

func (e ReplyError) Error() string { return string(e) }

func readReply(r *bufio.Reader) (any, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return nil, err
	}
	line = strings.TrimSuffix(line, "\r\n")
	if line == "" {
		return nil, errors.New("empty RESP line")
	}
	body := line[1:]
	switch line[0] {
	case '+':
		return body, nil
	case '-':
		return nil, ReplyError(body)
	case ':':
		return strconv.ParseInt(body, 10, 64)
	case '$':
		n, err := strconv.Atoi(body)
		if err != nil {
			return nil, err
		}
		if n < 0 {
			return nil, nil
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(r, buf); err != nil {
			return nil, err
		}
		return string(buf[:n]), nil
	case '*':
		n, err := strconv.Atoi(body)
		if err != nil {
			return nil, err
		}
		if n < 0 {
			return nil, nil
		}
		out := make([]any, n)
		for i := range out {
			if out[i], err = readReply(r); err != nil {
				return nil, err
			}
		}
		return out, nil
	default:
		return nil, fmt.Errorf("unexpected RESP type %q", line[0])
	}
}

// lockedBuffer collects the server's output; the exec package writes to it
// from its own goroutine while launch may read it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.buf.Len() > 64<<10 { // keep memory bounded; the start is what matters
		return len(p), nil
	}
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
