package broker

import (
	"io"
	"log/slog"
	"net"
	"testing"
	"unsafe"
)

// TestGuardedConnRelease: closing an accepted connection (twice, as mochi
// and the TLS layer both may) frees its global and per-IP slots exactly
// once, and the per-connection wrapper stays small (one is kept per idle
// device).
func TestGuardedConnRelease(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	m := newMetrics()
	lim := newConnLimiter(0, 2, m)
	g := &guardedListener{Listener: ln, name: ListenerMQTT, limiter: lim, log: slog.New(slog.NewTextHandler(io.Discard, nil)), metrics: m}
	var clients []net.Conn
	defer func() {
		for _, c := range clients {
			_ = c.Close()
		}
	}()
	var accepted []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		clients = append(clients, c)
		a, err := g.Accept()
		if err != nil {
			t.Fatal(err)
		}
		accepted = append(accepted, a)
	}
	if reason, ok := lim.admit("127.0.0.1"); ok || reason != rejectPerIP {
		t.Fatalf("third connection from the IP: admitted=%v reason=%q, want refused by the per-IP cap", ok, reason)
	}
	for _, a := range accepted {
		_ = a.Close()
		_ = a.Close()
	}
	if n := lim.Open(); n != 0 {
		t.Errorf("open = %d after closing every connection, want 0", n)
	}
	if len(lim.perIP) != 0 {
		t.Errorf("per-IP counts left: %v", lim.perIP)
	}
	if n := unsafe.Sizeof(guardedConn{}); n > 32 {
		t.Errorf("guardedConn is %d bytes, want at most 32", n)
	}
}
