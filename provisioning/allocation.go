package provisioning

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// DPS error codes of allocation failures (registrationState.errorCode).
const (
	// CodeCustomAllocationFailed: the custom allocation webhook failed or
	// is not available.
	CodeCustomAllocationFailed = 400207
	// CodeNoHubAssigned: no IoT hub could be assigned (the C SDK's
	// PROV_DEVICE_RESULT_HUB_NOT_SPECIFIED).
	CodeNoHubAssigned = 400208
)

// Kinds of allocation failure; an *AllocationError wraps exactly one of
// them, so callers branch with errors.Is and read the DPS code with
// errors.As.
var (
	// ErrCustomAllocationUnsupported: the enrollment uses the custom
	// (webhook) policy, which this version does not implement.
	ErrCustomAllocationUnsupported = errors.New("custom allocation is not supported")
	// ErrNoHub: no linked hub is a candidate for the device.
	ErrNoHub = errors.New("no IoT hub available")
	// ErrHubNotLinked: the enrollment names a hub that is not linked.
	ErrHubNotLinked = errors.New("IoT hub not linked")
	// ErrStaticNeedsOneHub: a static policy has more than one candidate.
	ErrStaticNeedsOneHub = errors.New("static allocation needs exactly one hub")
)

// AllocationError is a failed allocation with the DPS error code the
// device receives.
type AllocationError struct {
	Code int
	Msg  string
	kind error
}

func (e *AllocationError) Error() string { return fmt.Sprintf("%d %s", e.Code, e.Msg) }

// Unwrap returns the kind (ErrNoHub, ErrHubNotLinked, ...).
func (e *AllocationError) Unwrap() error { return e.kind }

func allocErr(code int, kind error, format string, args ...any) *AllocationError {
	return &AllocationError{Code: code, Msg: fmt.Sprintf(format, args...), kind: kind}
}

// MaxHubWeight bounds a hub's weight; larger values are almost certainly
// typos and would leave other hubs starved.
const MaxHubWeight = 10000

// Hub is one linked IoT hub. Weight scales its share of hashed
// allocations: a hub of weight 2 receives twice the devices of a hub of
// weight 1.
type Hub struct {
	HostName string
	Weight   int
}

// ParseHub parses the --hub flag: "host" or "host=weight" (weight 1 by
// default).
func ParseHub(s string) (Hub, error) {
	host, w, hasWeight := strings.Cut(strings.TrimSpace(s), "=")
	h := Hub{HostName: strings.TrimSpace(host), Weight: 1}
	if hasWeight {
		n, err := strconv.Atoi(strings.TrimSpace(w))
		if err != nil {
			return Hub{}, fmt.Errorf("hub %q: weight %q is not an integer", s, w)
		}
		h.Weight = n
	}
	if err := h.validate(); err != nil {
		return Hub{}, err
	}
	return h, nil
}

func (h Hub) validate() error {
	if err := ValidateHostName(h.HostName); err != nil {
		return fmt.Errorf("hub %q: %w", h.HostName, err)
	}
	if h.Weight < 1 || h.Weight > MaxHubWeight {
		return fmt.Errorf("hub %q: weight %d is out of range 1..%d", h.HostName, h.Weight, MaxHubWeight)
	}
	return nil
}

// ValidateHostName checks a DNS host name: dot-separated labels of 1 to 63
// ASCII letters, digits and hyphens, not starting or ending with a hyphen,
// at most 253 characters, no trailing dot (names are compared as written).
func ValidateHostName(s string) error {
	switch {
	case s == "":
		return fmt.Errorf("host name is empty")
	case len(s) > 253:
		return fmt.Errorf("host name is %d characters long, the limit is 253", len(s))
	}
	for i, label := range strings.Split(s, ".") {
		switch {
		case label == "":
			return fmt.Errorf("host name %q has an empty label", s)
		case len(label) > 63:
			return fmt.Errorf("host name %q: label %d is longer than 63 characters", s, i+1)
		case label[0] == '-' || label[len(label)-1] == '-':
			return fmt.Errorf("host name %q: label %q starts or ends with a hyphen", s, label)
		}
		for j := 0; j < len(label); j++ {
			if c := label[j]; !isAlnum(c) && c != '-' {
				return fmt.Errorf("host name %q has character %q (allowed: letters, digits, '-', '.')", s, c)
			}
		}
	}
	return nil
}

// Allocator assigns devices to linked hubs. It is immutable and safe for
// concurrent use; build a new one when the linked hubs change.
//
// Hashed allocation uses weighted rendezvous hashing: every candidate hub
// gets a pseudo-random score from (registration ID, hub name) and the
// highest score wins. A device therefore keeps its hub while the hub list is
// unchanged, on every broker and after restarts, and adding a hub moves
// only the devices that now score highest on it (about its share of the
// total weight); removing a hub moves only its own devices.
//
// geoLatency has no meaning without network locations and falls back to
// hashed.
type Allocator struct {
	hubs []linkedHub
}

type linkedHub struct {
	name   string  // as configured; returned to devices
	lower  string  // for case-insensitive matching
	seed   uint64  // hash of lower, mixed into every score
	weight float64 // >= 1
}

// NewAllocator validates the linked hubs (host names, weights, no
// duplicates ignoring case). An empty list is allowed: every allocation
// then fails with ErrNoHub, as DPS does with no linked hubs.
func NewAllocator(hubs []Hub) (*Allocator, error) {
	a := &Allocator{hubs: make([]linkedHub, 0, len(hubs))}
	var errs []error
	for i, h := range hubs {
		if h.Weight == 0 {
			h.Weight = 1
		}
		if err := h.validate(); err != nil {
			errs = append(errs, err)
			continue
		}
		lower := strings.ToLower(h.HostName)
		dup := false
		for _, prev := range a.hubs {
			if prev.lower == lower {
				errs = append(errs, fmt.Errorf("hub %q (entry %d) is listed twice", h.HostName, i+1))
				dup = true
				break
			}
		}
		if dup {
			continue
		}
		a.hubs = append(a.hubs, linkedHub{name: h.HostName, lower: lower, seed: hashString(lower), weight: float64(h.Weight)})
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return a, nil
}

// Hubs returns the linked hubs.
func (a *Allocator) Hubs() []Hub {
	out := make([]Hub, len(a.hubs))
	for i, h := range a.hubs {
		out[i] = Hub{HostName: h.name, Weight: int(h.weight)}
	}
	return out
}

// find returns the index of the linked hub named name (ignoring case), or -1.
func (a *Allocator) find(name string) int {
	for i := range a.hubs {
		if strings.EqualFold(a.hubs[i].name, name) {
			return i
		}
	}
	return -1
}

// CheckPolicy reports, as a *ValidationError, the hubs an enrollment names
// that are not linked, so that the admin API can refuse such an entry on
// write instead of failing every device later.
func (a *Allocator) CheckPolicy(p *EnrollmentPolicy) error {
	v := &ValidationError{}
	if p.IoTHubHostName != "" && a.find(p.IoTHubHostName) < 0 {
		v.add("iotHubHostName", "%q is not a linked hub", p.IoTHubHostName)
	}
	for i, h := range p.IoTHubs {
		if a.find(h) < 0 {
			v.add(fmt.Sprintf("iotHubs[%d]", i), "%q is not a linked hub", h)
		}
	}
	return v.err()
}

// Allocate picks the hub for a device. The candidates are the policy's
// iotHubs (every one must be linked), else its iotHubHostName, else all
// linked hubs. When current is the device's present hub, the policy does
// not update hub assignments on re-provisioning and current is still a
// candidate, current is kept. A nil policy means hashed over all hubs.
// The returned name is spelled as configured in the linked hubs.
func (a *Allocator) Allocate(registrationID string, p *EnrollmentPolicy, current string) (string, error) {
	if p == nil {
		p = &EnrollmentPolicy{}
	}
	if p.AllocationPolicy == AllocationCustom {
		return "", allocErr(CodeCustomAllocationFailed, ErrCustomAllocationUnsupported,
			"custom allocation (webhook) is not supported by this broker")
	}
	// Candidates are expressed as a bit set over a.hubs so that the hot
	// path does not allocate; linked hubs beyond 64 (DPS allows 50) fall
	// back to a slice.
	var set candidateSet
	switch {
	case len(p.IoTHubs) > 0:
		set.init(len(a.hubs))
		for _, name := range p.IoTHubs {
			i := a.find(name)
			if i < 0 {
				return "", allocErr(CodeNoHubAssigned, ErrHubNotLinked, "hub %q of the enrollment is not linked", name)
			}
			set.add(i)
		}
	case p.IoTHubHostName != "":
		i := a.find(p.IoTHubHostName)
		if i < 0 {
			return "", allocErr(CodeNoHubAssigned, ErrHubNotLinked, "hub %q of the enrollment is not linked", p.IoTHubHostName)
		}
		set.init(len(a.hubs))
		set.add(i)
	default:
		set.all(len(a.hubs))
	}
	n := set.count(len(a.hubs))
	if n == 0 {
		return "", allocErr(CodeNoHubAssigned, ErrNoHub, "no linked IoT hub is available")
	}
	if p.AllocationPolicy == AllocationStatic && n > 1 {
		return "", allocErr(CodeNoHubAssigned, ErrStaticNeedsOneHub, "static allocation needs exactly one hub, the enrollment has %d", n)
	}
	if current != "" && !p.ReprovisionPolicy.UpdatesHubAssignment() {
		if i := a.find(current); i >= 0 && set.has(i) {
			return a.hubs[i].name, nil
		}
	}
	// hashed, geoLatency (fallback), static with one candidate.
	key := hashLower(registrationID)
	best, bestScore := -1, math.Inf(-1)
	for i := range a.hubs {
		if !set.has(i) {
			continue
		}
		h := &a.hubs[i]
		if s := hrwScore(key, h.seed, h.weight); s > bestScore {
			best, bestScore = i, s
		}
	}
	return a.hubs[best].name, nil
}

// hrwScore is the weighted rendezvous score -w/ln(u), u uniform in (0,1)
// derived from the device and hub hashes. The highest score wins; the
// probability that hub i wins is w_i / Σw.
func hrwScore(key, seed uint64, weight float64) float64 {
	h := mix64(key ^ seed)
	// 53 random bits, offset by half a step so that u is never 0 or 1.
	u := (float64(h>>11) + 0.5) / (1 << 53)
	return -weight / math.Log(u)
}

// candidateSet is a set of hub indexes: a bit mask for up to 64 hubs and
// a bool slice beyond (which allocates, but DPS links 50 hubs at most).
type candidateSet struct {
	mask  uint64
	large []bool
	every bool
}

func (s *candidateSet) init(n int) {
	if n > 64 {
		s.large = make([]bool, n)
	}
}

func (s *candidateSet) all(int) { s.every = true }

func (s *candidateSet) add(i int) {
	if s.large != nil {
		s.large[i] = true
		return
	}
	s.mask |= 1 << uint(i)
}

func (s *candidateSet) has(i int) bool {
	switch {
	case s.every:
		return true
	case s.large != nil:
		return s.large[i]
	default:
		return s.mask&(1<<uint(i)) != 0
	}
}

func (s *candidateSet) count(n int) int {
	c := 0
	for i := 0; i < n; i++ {
		if s.has(i) {
			c++
		}
	}
	return c
}

// The hash below decides where every device lives: changing it reassigns
// about (n-1)/n of all devices. TestAllocateGolden pins it.

const (
	fnvOffset64 = 14695981039346656037
	fnvPrime64  = 1099511628211
)

// hashLower is FNV-1a over the ASCII-lower-cased bytes of s (registration
// IDs are case-insensitive), finished with mix64 because FNV alone spreads
// similar short IDs poorly.
func hashLower(s string) uint64 {
	h := uint64(fnvOffset64)
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		h ^= uint64(c)
		h *= fnvPrime64
	}
	return mix64(h)
}

func hashString(s string) uint64 { return hashLower(s) }

// mix64 is the MurmurHash3 64-bit finaliser: a bijection with full
// avalanche, so key^seed yields independent-looking scores per hub.
func mix64(h uint64) uint64 {
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	h *= 0xc4ceb9fe1a85ec53
	h ^= h >> 33
	return h
}
