package broker

import (
	"errors"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Reasons a connection is refused at accept time (metric label values).
const (
	rejectGlobal = "max_connections"
	rejectPerIP  = "max_connections_per_ip"
	rejectClosed = "shutting_down"
)

// connLimiter counts the open connections of every listener of one broker
// and enforces the global and per-IP caps. mochi has no per-IP cap, and its
// MaximumClients counts only clients past CONNECT, so TLS handshakes in
// progress would otherwise be unbounded.
type connLimiter struct {
	max, maxPerIP int
	metrics       *metrics

	mu     sync.Mutex
	open   int
	perIP  map[string]int
	closed bool
	idle   chan struct{} // closed when open drops to zero after drain began
}

func newConnLimiter(maxConns, maxPerIP int, m *metrics) *connLimiter {
	return &connLimiter{max: maxConns, maxPerIP: maxPerIP, metrics: m, perIP: make(map[string]int)}
}

// admit counts a new connection from ip, or returns the reason it is
// refused.
func (l *connLimiter) admit(ip string) (reason string, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.closed:
		return rejectClosed, false
	case l.max > 0 && l.open >= l.max:
		return rejectGlobal, false
	case l.maxPerIP > 0 && l.perIP[ip] >= l.maxPerIP:
		return rejectPerIP, false
	}
	l.open++
	l.perIP[ip]++
	return "", true
}

func (l *connLimiter) release(ip string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.open--
	if n := l.perIP[ip] - 1; n > 0 {
		l.perIP[ip] = n
	} else {
		delete(l.perIP, ip)
	}
	if l.open == 0 && l.idle != nil {
		close(l.idle)
		l.idle = nil
	}
}

// drain refuses every further connection and returns a channel that is
// closed once no connection is open.
func (l *connLimiter) drain() <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
	ch := make(chan struct{})
	if l.open == 0 {
		close(ch)
		return ch
	}
	if l.idle == nil {
		l.idle = make(chan struct{})
	}
	return l.idle
}

// Open returns the number of open connections.
func (l *connLimiter) Open() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.open
}

// guardedListener applies the limiter and the pre-CONNECT deadline to the
// raw TCP connections of one listener, below TLS. mochi sets no deadline
// before CONNECT, so without it a silent connection would stay open
// forever; mochi replaces the deadline with its keepalive one after
// CONNECT.
type guardedListener struct {
	net.Listener
	name     string
	limiter  *connLimiter
	deadline time.Duration
	log      *slog.Logger
	metrics  *metrics
}

// Accept returns the next admitted connection. Refused connections are
// closed at once and never reach TLS. Temporary accept errors (out of file
// descriptors) are retried with a backoff instead of being returned:
// mochi's listener loop stops for good on any Accept error.
func (g *guardedListener) Accept() (net.Conn, error) {
	var backoff time.Duration
	for {
		c, err := g.Listener.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil, err
			}
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() && !isTemporary(err) {
				return nil, err
			}
			if backoff == 0 {
				backoff = 5 * time.Millisecond
			} else if backoff *= 2; backoff > time.Second {
				backoff = time.Second
			}
			g.log.Warn("accept failed; retrying", "listener", g.name, "error", err, "backoff", backoff)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		ip := remoteIP(c.RemoteAddr())
		if reason, ok := g.limiter.admit(ip); !ok {
			g.metrics.connRejected(g.name, reason)
			_ = c.Close()
			continue
		}
		g.metrics.connAccepted(g.name)
		if g.deadline > 0 {
			_ = c.SetDeadline(time.Now().Add(g.deadline))
		}
		if tc, ok := c.(*net.TCPConn); ok {
			// Provisioning exchanges are a few small packets; Nagle plus
			// delayed ACK would add tens of milliseconds to each.
			_ = tc.SetNoDelay(true)
		}
		return &guardedConn{Conn: c, g: g}, nil
	}
}

// isTemporary recognises the accept errors net/http also retries.
func isTemporary(err error) bool {
	var t interface{ Temporary() bool }
	return errors.As(err, &t) && t.Temporary()
}

func remoteIP(a net.Addr) string {
	if a == nil {
		return ""
	}
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.IP.String()
	}
	host, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	return host
}

// guardedConn releases its slot in the limiter exactly once. One lives as
// long as its connection, so it is kept to 32 bytes: the IP is derived
// again from the remote address at close instead of being stored.
type guardedConn struct {
	net.Conn
	g      *guardedListener
	closed atomic.Bool
}

func (c *guardedConn) Close() error {
	err := c.Conn.Close()
	if c.closed.CompareAndSwap(false, true) {
		c.g.limiter.release(remoteIP(c.Conn.RemoteAddr()))
		c.g.metrics.connClosed(c.g.name)
	}
	return err
}
