package hooks

import (
	"context"
	"crypto/x509"
	"strings"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/dpsbroker/dpsbroker/provisioning"
	"github.com/dpsbroker/dpsbroker/provisioning/x509attest"
)

// sessionKind says what a connection may do.
type sessionKind uint8

const (
	// kindX509 is a device admitted by its certificate at CONNECT.
	kindX509 sessionKind = iota + 1
	// kindUnauthenticated is a device without a client certificate (TPM
	// or symmetric key): it proves itself on its register request.
	kindUnauthenticated
	// kindService is a back-end subscriber of the event topic.
	kindService
)

func (k sessionKind) device() bool { return k == kindX509 || k == kindUnauthenticated }

func (k sessionKind) String() string {
	switch k {
	case kindX509:
		return "x509"
	case kindUnauthenticated:
		return "unauthenticated"
	case kindService:
		return "service"
	}
	return "unknown"
}

// session is what the hook knows about one connection. Fields set in
// OnConnect are read-only afterwards; the limiters and tpm are used only
// on the client's own read goroutine. One is kept per idle connection:
// small fields first so that they share a word, and the TPM state behind a
// pointer (160 bytes instead of 224 for an X.509 device).
type session struct {
	kind sessionKind
	// established and revoked are guarded by registry.mu.
	established bool
	revoked     bool

	// registrationID is the username's registration ID, as sent.
	registrationID string
	regKey         string // provisioning.RegistrationKey(registrationID)
	groupKey       string // lower-cased group ID of the admitting group
	chain          []*x509.Certificate
	decision       *x509attest.Decision

	registers, polls bucket

	tpm *tpmState // nil until a session without a certificate needs it
}

// tpmState is the TPM state of an unauthenticated session. connectSAS is
// the SAS token sent as the CONNECT password: it answers the first TPM
// register request without tpm.sasToken, once. operation and key are the
// operation of an answered challenge and the authenticationKey its final
// poll returns.
type tpmState struct {
	connectSAS     string
	connectSASUsed bool
	operation, key string
}

// tpmState returns the session's TPM state, created on first use.
func (s *session) tpmState() *tpmState {
	if s.tpm == nil {
		s.tpm = &tpmState{}
	}
	return s.tpm
}

// registry indexes live sessions by client, registration ID and group, so
// that a disabled entry disconnects its live sessions.
type registry struct {
	mu       sync.RWMutex
	byClient map[*mqtt.Client]*session
	// byReg lists a registration's sessions in a slice: there is nearly
	// always one, and a map per device costs ~120 B per idle connection.
	byReg   map[string][]*mqtt.Client
	byGroup map[string]map[*mqtt.Client]struct{}
	// pending counts sessions added in OnConnect and not yet established.
	// A connection refused by another hook after ours never reaches
	// OnDisconnect, so pending entries of closed clients are swept.
	pending int
}

// sweepPendingAbove is the number of pending sessions that triggers a
// sweep; connects in flight are normally far fewer.
const sweepPendingAbove = 256

func newRegistry() *registry {
	return &registry{
		byClient: make(map[*mqtt.Client]*session),
		byReg:    make(map[string][]*mqtt.Client),
		byGroup:  make(map[string]map[*mqtt.Client]struct{}),
	}
}

func (r *registry) get(cl *mqtt.Client) *session {
	r.mu.RLock()
	s := r.byClient[cl]
	r.mu.RUnlock()
	return s
}

func (r *registry) add(cl *mqtt.Client, s *session) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.pending > sweepPendingAbove {
		for c, ps := range r.byClient {
			if !ps.established && c.Closed() {
				r.removeLocked(c)
			}
		}
	}
	if _, ok := r.byClient[cl]; ok {
		r.removeLocked(cl)
	}
	r.byClient[cl] = s
	r.pending++
	if s.regKey != "" {
		r.byReg[s.regKey] = append(r.byReg[s.regKey], cl)
	}
	if s.groupKey != "" {
		addIndex(r.byGroup, s.groupKey, cl)
	}
}

// establish marks the session live and reports whether it was revoked
// while its CONNECT was being processed.
func (r *registry) establish(cl *mqtt.Client) (s *session, revoked bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s = r.byClient[cl]
	if s == nil {
		return nil, false
	}
	if !s.established {
		s.established = true
		r.pending--
	}
	return s, s.revoked
}

func (r *registry) remove(cl *mqtt.Client) {
	r.mu.Lock()
	r.removeLocked(cl)
	r.mu.Unlock()
}

func (r *registry) removeLocked(cl *mqtt.Client) {
	s, ok := r.byClient[cl]
	if !ok {
		return
	}
	delete(r.byClient, cl)
	if !s.established {
		r.pending--
	}
	r.delReg(s.regKey, cl)
	delIndex(r.byGroup, s.groupKey, cl)
}

// revokeReg marks the sessions of a registration revoked and returns the
// established ones, which the caller disconnects. Sessions still
// connecting are disconnected by OnSessionEstablished.
func (r *registry) revokeReg(key string) []*mqtt.Client {
	r.mu.Lock()
	defer r.mu.Unlock()
	var live []*mqtt.Client
	for _, cl := range r.byReg[key] {
		live = r.revokeLocked(cl, live)
	}
	return live
}

// revokeGroup is revokeReg for the sessions admitted through a group.
func (r *registry) revokeGroup(key string) []*mqtt.Client {
	r.mu.Lock()
	defer r.mu.Unlock()
	var live []*mqtt.Client
	for cl := range r.byGroup[key] {
		live = r.revokeLocked(cl, live)
	}
	return live
}

func (r *registry) revokeLocked(cl *mqtt.Client, live []*mqtt.Client) []*mqtt.Client {
	s := r.byClient[cl]
	s.revoked = true
	if s.established {
		live = append(live, cl)
	}
	return live
}

// snapshot returns the established X.509 sessions.
func (r *registry) snapshot() map[*mqtt.Client]*session {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make(map[*mqtt.Client]*session, len(r.byClient))
	for cl, s := range r.byClient {
		if s.kind == kindX509 && s.established {
			out[cl] = s
		}
	}
	return out
}

func addIndex(idx map[string]map[*mqtt.Client]struct{}, key string, cl *mqtt.Client) {
	m := idx[key]
	if m == nil {
		m = make(map[*mqtt.Client]struct{})
		idx[key] = m
	}
	m[cl] = struct{}{}
}

// delReg removes cl from its registration's sessions.
func (r *registry) delReg(key string, cl *mqtt.Client) {
	cls := r.byReg[key]
	for i, c := range cls {
		if c != cl {
			continue
		}
		if len(cls) == 1 {
			delete(r.byReg, key)
			return
		}
		last := len(cls) - 1
		cls[i] = cls[last]
		cls[last] = nil // the closed client is not kept alive
		r.byReg[key] = cls[:last]
		return
	}
}

func delIndex(idx map[string]map[*mqtt.Client]struct{}, key string, cl *mqtt.Client) {
	if key == "" {
		return
	}
	m := idx[key]
	delete(m, cl)
	if len(m) == 0 {
		delete(idx, key)
	}
}

// DisconnectRegistration disconnects every live session of the device
// with this registration ID (case-insensitive), with DISCONNECT 0x98
// "administrative action" on MQTT 5. A session whose CONNECT is being
// processed right now is disconnected as soon as it is established. The
// broker calls it when a change feed reports that the device's individual
// enrollment changed; the device's next CONNECT is decided afresh. It
// returns the number of sessions disconnected.
func (h *DPS) DisconnectRegistration(registrationID string) int {
	return h.disconnect(h.sessions.revokeReg(provisioning.RegistrationKey(registrationID)), "registration", registrationID)
}

// DisconnectGroup disconnects every live session admitted through the
// enrollment group groupID (case-insensitive), like DisconnectRegistration.
func (h *DPS) DisconnectGroup(groupID string) int {
	return h.disconnect(h.sessions.revokeGroup(strings.ToLower(groupID)), "group", groupID)
}

func (h *DPS) disconnect(clients []*mqtt.Client, what, id string) int {
	for _, cl := range clients {
		_ = h.srv.DisconnectClient(cl, packets.ErrAdministrativeAction) // returns the code even on success
	}
	if len(clients) > 0 {
		h.log.Info("disconnected sessions of a changed entry", "entry", what, "id", id, "sessions", len(clients))
	}
	return len(clients)
}

// Recheck takes the X.509 decision again for every live X.509 device
// session and disconnects the sessions that are now refused. The broker
// calls it when it cannot tell which entries changed (a lost change feed,
// a CA certificate change). Sessions whose decision cannot be taken (store
// down) are kept: they are checked again on their next register request.
// It returns the number of sessions disconnected.
func (h *DPS) Recheck(ctx context.Context) int {
	n := 0
	for cl, s := range h.sessions.snapshot() {
		if ctx.Err() != nil {
			break
		}
		dctx, cancel := context.WithTimeout(ctx, h.opts.RequestTimeout)
		dec, err := h.opts.Decider.Decide(dctx, s.chain)
		cancel()
		if err != nil || dec.Outcome == x509attest.Provision {
			continue
		}
		h.log.Info("disconnecting a session its entry no longer admits", "registrationId", s.registrationID, "reason", dec.Reason)
		_ = h.srv.DisconnectClient(cl, packets.ErrAdministrativeAction)
		n++
	}
	return n
}

// bucket is a token bucket: burst tokens, one more every interval.
type bucket struct {
	tokens float64
	last   time.Time
}

// take spends a token, or returns how long until one is available.
func (b *bucket) take(now time.Time, burst int, interval time.Duration) (ok bool, wait time.Duration) {
	if b.last.IsZero() {
		b.tokens = float64(burst)
	} else if dt := now.Sub(b.last); dt > 0 {
		b.tokens += float64(dt) / float64(interval)
		if b.tokens > float64(burst) {
			b.tokens = float64(burst)
		}
	}
	b.last = now
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	return false, time.Duration((1 - b.tokens) * float64(interval))
}
