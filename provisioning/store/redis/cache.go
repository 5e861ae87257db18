package redisstore

import (
	"sync"

	"github.com/dpsbroker/dpsbroker/provisioning"
)

// cache is the per-process cache of what every device connection reads:
// enrollments (including "there is none"), groups, the group list, the
// certificate -> groups answers and CA certificates.
//
// Two rules keep it from ever serving a revoked entry:
//   - It is only used while the invalidation subscription is confirmed
//     (live). When the subscription drops, everything is flushed and reads
//     go to Redis until it is confirmed again.
//   - A value read from Redis is inserted only if nothing that could make
//     it stale happened since the read began: the reader takes a stamp
//     (generation counters) before sending its command, and every
//     invalidation or drop bumps a counter the stamp covers. An
//     invalidation that arrives after the insertion deletes the entry as
//     usual, because Redis publishes it after the write it is about.
//
// Counters are striped by key rather than global so that a burst of writes
// to other entries (an admin importing enrollments) does not stop the hot
// entries from being cached.
//
// Values in the cache are never handed out: readers get copies (except the
// group list, which is a documented shared snapshot).
type cache struct {
	mu sync.RWMutex
	// disabled turns off the per-entry caches (not the group list
	// snapshot, which is part of the ListEnrollmentGroups contract).
	disabled bool
	live     bool
	global   uint64
	gens     [stripes + 1]uint64 // stripes, then groupsSlot

	enr    boundedMap[string, *provisioning.IndividualEnrollment] // nil value: known missing
	grp    boundedMap[string, *provisioning.EnrollmentGroup]      // nil value: known missing
	ca     boundedMap[string, *provisioning.CACertificate]        // nil value: known missing
	byCert boundedMap[[32]byte, []*provisioning.EnrollmentGroup]
	groups []*provisioning.EnrollmentGroup
	// groupsOK says groups holds the current list (it may be empty).
	groupsOK bool
	// own holds the etags of this process's writes that were invalidated
	// locally and whose pub/sub echo has not arrived yet.
	own map[string]struct{}
}

// maxOwn bounds own; past it, echoes simply invalidate again.
const maxOwn = 10000

const (
	stripes = 4096
	// groupsSlot guards what any group or CA change can alter: the group
	// list and the GroupsByCertificate answers.
	groupsSlot = stripes
)

// stamp is what a reader captures before going to Redis.
type stamp struct {
	global, gen uint64
	slot        int
	ok          bool
}

// slotOf returns the counter stripe of one entry; kind separates the
// namespaces ('e', 'g', 'c').
func slotOf(kind byte, key string) int {
	h := uint32(2166136261) ^ uint32(kind) // FNV-1a
	h *= 16777619
	for i := 0; i < len(key); i++ {
		h ^= uint32(key[i])
		h *= 16777619
	}
	return int(h % stripes)
}

func newCache(size int) *cache {
	c := &cache{disabled: size < 0, own: make(map[string]struct{})}
	c.enr.init(size)
	c.grp.init(size)
	c.ca.init(size)
	c.byCert.init(size)
	return c
}

// begin is called before a Redis read whose answer may be cached under
// slot. perEntry is false for the group list snapshot, which is kept even
// when the per-entry caches are disabled.
func (c *cache) begin(slot int, perEntry bool) stamp {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return stamp{global: c.global, gen: c.gens[slot], slot: slot, ok: c.live && !(perEntry && c.disabled)}
}

// lookup runs get under the read lock if the cache may be used.
func lookup[V any](c *cache, perEntry bool, get func() (V, bool)) (V, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if !c.live || (perEntry && c.disabled) {
		var zero V
		return zero, false
	}
	return get()
}

// insert runs put under the write lock if nothing was invalidated since
// the stamp was taken.
func (c *cache) insert(st stamp, put func()) {
	if !st.ok {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.live && c.global == st.global && c.gens[st.slot] == st.gen {
		put()
	}
}

// setLive marks the subscription as confirmed (or lost). Either way the
// cache starts empty: entries from before a drop may have missed their
// invalidation.
func (c *cache) setLive(live bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.live = live
	clear(c.own) // echoes not received by now are lost with the connection
	c.flushLocked()
}

// flush drops everything; used for messages the store does not know.
func (c *cache) flush() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.flushLocked()
}

func (c *cache) flushLocked() {
	c.global++
	c.enr.clear()
	c.grp.clear()
	c.ca.clear()
	c.byCert.clear()
	c.groups, c.groupsOK = nil, false
}

// invalidateOwn invalidates after a successful write of this process and
// remembers the write's etag so that its echo is not applied twice.
func (c *cache) invalidateOwn(ch provisioning.Change, etag string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.invalidateLocked(ch)
	if len(c.own) < maxOwn {
		c.own[etag] = struct{}{}
	}
}

// echo applies an invalidation message unless it is the echo of a write
// this process already invalidated.
func (c *cache) echo(ch provisioning.Change, etag string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.own[etag]; ok {
		delete(c.own, etag)
		return
	}
	c.invalidateLocked(ch)
}

// invalidate drops what a change of one entry can affect.
func (c *cache) invalidate(ch provisioning.Change) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.invalidateLocked(ch)
}

func (c *cache) invalidateLocked(ch provisioning.Change) {
	switch ch.Kind {
	case provisioning.ChangeEnrollment:
		c.gens[slotOf('e', ch.ID)]++
		c.enr.del(ch.ID)
	case provisioning.ChangeGroup:
		c.gens[slotOf('g', ch.ID)]++
		c.gens[groupsSlot]++
		c.grp.del(ch.ID)
		c.byCert.clear()
		c.groups, c.groupsOK = nil, false
	case provisioning.ChangeCA:
		// Groups find certificates through CA names, so any CA change can
		// change any GroupsByCertificate answer.
		c.gens[slotOf('c', ch.ID)]++
		c.gens[groupsSlot]++
		c.ca.del(ch.ID)
		c.byCert.clear()
	default:
		c.flushLocked()
	}
}

// boundedMap is a map with at most max entries. When full it evicts an
// arbitrary entry (Go randomises map iteration): cheaper than LRU
// bookkeeping on the read path, and good enough for a cache whose hot set
// is either small or far larger than any bound.
type boundedMap[K comparable, V any] struct {
	m   map[K]V
	max int
}

func (b *boundedMap[K, V]) init(max int) {
	b.max = max
	b.m = make(map[K]V)
}

func (b *boundedMap[K, V]) get(k K) (V, bool) {
	v, ok := b.m[k]
	return v, ok
}

func (b *boundedMap[K, V]) put(k K, v V) {
	if b.max <= 0 {
		return
	}
	if _, ok := b.m[k]; !ok && len(b.m) >= b.max {
		for victim := range b.m {
			delete(b.m, victim)
			break
		}
	}
	b.m[k] = v
}

func (b *boundedMap[K, V]) del(k K) { delete(b.m, k) }

func (b *boundedMap[K, V]) clear() { clear(b.m) }

func (b *boundedMap[K, V]) len() int { return len(b.m) }
