package redistest

import (
	"net"
	"strings"
	"testing"
)

func TestStartDoRestart(t *testing.T) {
	s := Start(t)
	if v, err := s.Do("SET", "k", "v"); err != nil || v != "OK" {
		t.Fatalf("SET = %v, %v", v, err)
	}
	if v, err := s.Do("GET", "k"); err != nil || v != "v" {
		t.Fatalf("GET = %v, %v", v, err)
	}
	if _, err := s.Do("NOSUCHCOMMAND"); err == nil {
		t.Fatal("an unknown command succeeded")
	}

	s.Restart(t)
	if v, err := s.Do("GET", "k"); err != nil || v != nil {
		t.Fatalf("after restart GET = %v, %v; want an empty server", v, err)
	}

	s.Stop()
	s.Stop() // idempotent
	if c, err := net.Dial("tcp", s.Addr()); err == nil {
		c.Close()
		t.Fatal("server still accepts connections after Stop")
	}
}

func TestSharedNewDB(t *testing.T) {
	s := Shared(t)
	if Shared(t) != s {
		t.Fatal("Shared returned two servers")
	}
	a, b := s.NewDB(t), s.NewDB(t)
	if a == b || a == 0 || b == 0 {
		t.Fatalf("NewDB returned %d and %d", a, b)
	}
	if _, err := s.DoDB(a, "SET", "k", "a"); err != nil {
		t.Fatal(err)
	}
	if v, err := s.DoDB(b, "GET", "k"); err != nil || v != nil {
		t.Fatalf("database %d sees the key of database %d: %v, %v", b, a, v, err)
	}
	v, err := s.DoDB(a, "KEYS", "*")
	if err != nil {
		t.Fatal(err)
	}
	if keys, ok := v.([]any); !ok || len(keys) != 1 || keys[0] != "k" {
		t.Fatalf("KEYS = %#v", v)
	}
}

func TestMissingBinaryFailsWithHint(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	_, err := start(t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "apt-get install -y redis-server") {
		t.Fatalf("start without redis-server: %v; want the install hint", err)
	}
}

func TestMain(m *testing.M) { Main(m) }
