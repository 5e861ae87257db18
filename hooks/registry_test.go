package hooks

import (
	"slices"
	"testing"
	"unsafe"

	mqtt "github.com/mochi-mqtt/server/v2"
)

// TestRegistryIndexes: sessions are found by registration and group until
// removed, several sessions of one registration are all revoked, only
// established ones are returned to be disconnected, and a removed client
// is no longer referenced by any index.
func TestRegistryIndexes(t *testing.T) {
	r := newRegistry()
	a, b, c, d := &mqtt.Client{ID: "a"}, &mqtt.Client{ID: "b"}, &mqtt.Client{ID: "c"}, &mqtt.Client{ID: "d"}
	r.add(a, &session{kind: kindX509, regKey: "dev-1", groupKey: "g"})
	r.add(b, &session{kind: kindUnauthenticated, regKey: "dev-1"})
	r.add(c, &session{kind: kindX509, regKey: "dev-2", groupKey: "g"})
	r.add(d, &session{kind: kindX509, regKey: "dev-1", groupKey: "g"})
	for _, cl := range []*mqtt.Client{a, b, c} {
		r.establish(cl)
	}
	ids := func(cls []*mqtt.Client) []string {
		var out []string
		for _, cl := range cls {
			out = append(out, cl.ID)
		}
		slices.Sort(out)
		return out
	}
	for _, tc := range []struct {
		name   string
		remove []*mqtt.Client
		reg    string
		group  string
		want   []string // established sessions revoked
	}{
		{name: "every live session of a registration", reg: "dev-1", want: []string{"a", "b"}},
		{name: "a group", group: "g", want: []string{"a", "c"}},
		{name: "after one of three is removed", remove: []*mqtt.Client{a}, reg: "dev-1", want: []string{"b"}},
		{name: "after all are removed", remove: []*mqtt.Client{b, d}, reg: "dev-1"},
		{name: "unknown registration", reg: "nope"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, cl := range tc.remove {
				r.remove(cl)
			}
			var got []*mqtt.Client
			if tc.reg != "" {
				got = r.revokeReg(tc.reg)
			} else {
				got = r.revokeGroup(tc.group)
			}
			if !slices.Equal(ids(got), tc.want) {
				t.Errorf("revoked %v, want %v", ids(got), tc.want)
			}
		})
	}
	if s := r.get(d); s != nil {
		t.Error("removed session still registered")
	}
	if _, ok := r.byReg["dev-1"]; ok {
		t.Errorf("registration index keeps an entry with no session: %v", r.byReg["dev-1"])
	}
	if cls := r.byReg["dev-2"]; len(cls) != 1 || cls[0] != c {
		t.Errorf("dev-2 index = %v, want [c]", ids(cls))
	}
	if r.pending != 0 {
		t.Errorf("pending = %d after d (never established) was removed", r.pending)
	}
}

// TestRegistryRemoveClearsSlot: removing a session from a registration
// with several does not keep the closed client reachable from the slice's
// spare capacity.
func TestRegistryRemoveClearsSlot(t *testing.T) {
	r := newRegistry()
	a, b := &mqtt.Client{ID: "a"}, &mqtt.Client{ID: "b"}
	r.add(a, &session{kind: kindUnauthenticated, regKey: "dev"})
	r.add(b, &session{kind: kindUnauthenticated, regKey: "dev"})
	r.remove(b)
	cls := r.byReg["dev"]
	if len(cls) != 1 || cls[0] != a {
		t.Fatalf("index = %v, want [a]", cls)
	}
	if spare := cls[:cap(cls)]; slices.Contains(spare, b) {
		t.Error("removed client still referenced by the index's backing array")
	}
}

// TestSessionSize: a session is kept for every idle connection; its size
// class is part of the per-connection memory budget (PROFILING.md).
func TestSessionSize(t *testing.T) {
	if n := unsafe.Sizeof(session{}); n > 160 {
		t.Errorf("session is %d bytes, want at most 160 (one size class up costs 16–48 B per connection)", n)
	}
}
