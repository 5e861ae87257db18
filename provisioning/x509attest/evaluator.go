package x509attest

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/dpsbroker/dpsbroker/provisioning"
)

// Enrollments is what the decision reads. provisioning.Store satisfies it.
type Enrollments interface {
	// GetEnrollment returns the individual enrollment of a registration ID,
	// or an error wrapping provisioning.ErrNotFound.
	GetEnrollment(ctx context.Context, registrationID string) (*provisioning.IndividualEnrollment, error)
	// ListEnrollmentGroups returns a shared snapshot: the same slice until a
	// group changes. The evaluator keys its certificate index on it.
	ListEnrollmentGroups(ctx context.Context) ([]*provisioning.EnrollmentGroup, error)
	// GetCACertificate resolves a group's caReferences.
	GetCACertificate(ctx context.Context, name string) (*provisioning.CACertificate, error)
}

// Defaults of Options.
const (
	DefaultMaxChainLength     = 8
	DefaultMaxCertificateSize = 8192
	DefaultClockSkew          = time.Minute
	DefaultCacheSize          = 100_000
)

// parseCacheSize bounds the parsed enrolled certificates. DPS allows 100
// X.509 groups and 25 CA certificates; the slack covers churn.
const parseCacheSize = 4096

// Options tune an Evaluator. Zero values mean the defaults.
type Options struct {
	// MaxChainLength is the most certificates a device may present, leaf
	// included (default 8). A built chain may add one enrolled certificate.
	MaxChainLength int
	// MaxCertificateSize is the most DER bytes of one certificate (default
	// 8192).
	MaxCertificateSize int
	// ClockSkew is the tolerance on validity periods (default one minute;
	// negative means none).
	ClockSkew time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
	// CacheSize bounds the verified-signature cache, in entries (default
	// 100 000, about 10 MB).
	CacheSize int
	// Logger receives warnings about unusable enrolled certificates
	// (default: discard). Decisions are not logged here; callers log
	// Decision.Explanation.
	Logger *slog.Logger
}

// Evaluator decides X.509 attestations. It is safe for concurrent use.
//
// It caches only facts that cannot go stale: that a parent's key verified a
// child's signature, that a leaf passed the name constraints of a chain,
// and parsed enrolled certificates keyed by their text. Enrollment and
// group status are read from Enrollments on every decision.
type Evaluator struct {
	src      Enrollments
	maxChain int
	maxSize  int
	skew     time.Duration
	now      func() time.Time
	log      *slog.Logger

	links  *pairSet // (child, parent): parent's key verified child's signature
	nameOK *pairSet // (leaf, digest of the path above it): name constraints passed
	parse  *parseCache
	names  nameCache
	groups atomic.Pointer[groupIndex]
	// tpmGroups indexes the TPM groups (keyed by a manufacturer CA) for
	// DecideEKChain, apart from the X.509 groups so that neither kind of
	// group can ever admit the other kind of device.
	tpmGroups atomic.Pointer[groupIndex]
}

// New returns an Evaluator reading enrollments from src.
func New(src Enrollments, opts Options) *Evaluator {
	e := &Evaluator{
		src:      src,
		maxChain: opts.MaxChainLength,
		maxSize:  opts.MaxCertificateSize,
		skew:     opts.ClockSkew,
		now:      opts.Now,
		log:      opts.Logger,
	}
	if e.maxChain <= 0 {
		e.maxChain = DefaultMaxChainLength
	}
	if e.maxSize <= 0 {
		e.maxSize = DefaultMaxCertificateSize
	}
	switch {
	case e.skew == 0:
		e.skew = DefaultClockSkew
	case e.skew < 0:
		e.skew = 0
	}
	if e.now == nil {
		e.now = time.Now
	}
	if e.log == nil {
		e.log = slog.New(slog.DiscardHandler)
	}
	size := opts.CacheSize
	if size <= 0 {
		size = DefaultCacheSize
	}
	e.links = newPairSet(size)
	e.nameOK = newPairSet(max(size/16, shardCount))
	e.parse = newParseCache(parseCacheSize)
	return e
}

// Decide takes the chain exactly as presented in TLS (leaf first, then
// intermediates in any order) and decides whether the device may be
// provisioned. The error is non-nil only when the enrollments could not be
// read; callers must then refuse (fail closed). Every refusal is a Decision
// with Outcome Refuse.
func (e *Evaluator) Decide(ctx context.Context, chain []*x509.Certificate) (*Decision, error) {
	if len(chain) == 0 || chain[0] == nil {
		return (&Decision{}).refuse(ReasonMalformed, "no client certificate was presented"), nil
	}
	leaf := chain[0]
	leafHash := sha256.Sum256(leaf.Raw)
	d := &Decision{
		RegistrationID: leaf.Subject.CommonName,
		DeviceID:       leaf.Subject.CommonName,
		Certificate:    e.leafInfo(leaf, leafHash),
	}
	if len(chain) > e.maxChain {
		return d.refuse(ReasonChainTooLong, fmt.Sprintf("%d certificates presented, the limit is %d", len(chain), e.maxChain)), nil
	}
	for i, c := range chain {
		if c == nil {
			return d.refuse(ReasonMalformed, fmt.Sprintf("certificate %d of the chain is missing", i)), nil
		}
		if len(c.Raw) > e.maxSize {
			return d.refuse(ReasonCertificateTooLarge, fmt.Sprintf("certificate %d (%s) is %d bytes, the limit is %d", i, c.Subject, len(c.Raw), e.maxSize)), nil
		}
	}
	now := e.now()
	if r, why := e.checkLeaf(leaf, now); r != "" {
		return d.refuse(r, why), nil
	}
	cn := leaf.Subject.CommonName

	// 1. The individual enrollment, if there is one, decides alone.
	enr, err := e.src.GetEnrollment(ctx, provisioning.RegistrationKey(cn))
	switch {
	case err == nil && enr != nil:
		return decideIndividual(d, enr, leafHash), nil
	case err != nil && !errors.Is(err, provisioning.ErrNotFound):
		return nil, fmt.Errorf("x509attest: read individual enrollment %q: %w", cn, err)
	}

	// 2. Otherwise the first group found walking up the verified chain.
	if selfIssued(leaf) {
		return d.refuse(ReasonSelfSignedLeaf, fmt.Sprintf("certificate %s is self-signed and no individual enrollment %q holds it", d.Certificate.SHA256Thumbprint, cn)), nil
	}
	groups, err := e.src.ListEnrollmentGroups(ctx)
	if err != nil {
		return nil, fmt.Errorf("x509attest: list enrollment groups: %w", err)
	}
	ix := e.index(groups, provisioning.AttestationX509, &e.groups)
	extra, err := e.resolveCARefs(ctx, ix)
	if err != nil {
		return nil, err
	}
	return e.walk(d, chain, leafHash, ix, extra, now, purposeClientAuth), nil
}

func decideIndividual(d *Decision, enr *provisioning.IndividualEnrollment, leafHash [32]byte) *Decision {
	d.Enrollment = enr
	if enr.DeviceID != "" {
		d.DeviceID = enr.DeviceID
	}
	id := enr.RegistrationID
	if enr.Attestation.Type != provisioning.AttestationX509 {
		if !enr.Enabled() {
			return d.refuse(ReasonIndividualDisabled, fmt.Sprintf("individual enrollment %q (%s attestation) is disabled", id, enr.Attestation.Type))
		}
		return d.refuse(ReasonCertificateMismatch, fmt.Sprintf("individual enrollment %q uses %s attestation, not x509; it decides alone", id, enr.Attestation.Type))
	}
	slot := matchClientCertificate(enr, leafHash)
	if !enr.Enabled() {
		return d.refuse(ReasonIndividualDisabled, fmt.Sprintf("individual enrollment %q is disabled", id))
	}
	if slot == "" {
		return d.refuse(ReasonCertificateMismatch, fmt.Sprintf("certificate %s is neither the primary nor the secondary certificate of individual enrollment %q", d.Certificate.SHA256Thumbprint, id))
	}
	return d.provision(fmt.Sprintf("individual enrollment %q is enabled and holds certificate %s as its %s certificate", id, d.Certificate.SHA256Thumbprint, slot))
}

// matchClientCertificate returns "primary" or "secondary" when that client
// certificate of enr is the leaf, or "" when neither is. Thumbprints are
// public, so a plain comparison is fine.
func matchClientCertificate(enr *provisioning.IndividualEnrollment, leafHash [32]byte) string {
	x := enr.Attestation.X509
	if x == nil || x.ClientCertificates == nil {
		return ""
	}
	for _, s := range []struct {
		slot string
		c    *provisioning.X509CertificateWithInfo
	}{{"primary", x.ClientCertificates.Primary}, {"secondary", x.ClientCertificates.Secondary}} {
		if s.c == nil || s.c.Certificate == "" {
			continue
		}
		der, err := decodeCertificate(s.c.Certificate)
		if err == nil && sha256.Sum256(der) == leafHash {
			return s.slot
		}
	}
	return ""
}

// walk builds the chain from the leaf's issuer upward, one verified link at
// a time, and stops at the first certificate an enrollment group
// references. Links above that certificate are never looked at: the
// enrolled certificate is the trust anchor.
func (e *Evaluator) walk(d *Decision, chain []*x509.Certificate, leafHash [32]byte, ix *groupIndex, extra []*anchor, now time.Time, p purpose) *Decision {
	var pathBuf [16]*x509.Certificate
	var hashBuf [16][32]byte
	path := append(pathBuf[:0], chain[0])
	hashes := append(hashBuf[:0], leafHash)
	constrained := false
	// Uncached signature checks this decision may spend. An honest chain
	// needs one per link; the slack covers a renewed CA under the same name.
	budget := 2 * e.maxChain
	for {
		cur, curHash := path[len(path)-1], hashes[len(hashes)-1]
		if len(path) > e.maxChain {
			return d.refuse(ReasonChainTooLong, fmt.Sprintf("no enrolled certificate within %d certificates above %q", e.maxChain, d.RegistrationID))
		}
		parent, parentHash, r, why := e.findParent(cur, curHash, len(path), chain[1:], ix, extra, hashes, now, &budget, p)
		if parent == nil {
			if r != "" {
				return d.refuse(r, why)
			}
			return d.refuse(ReasonNoEnrollment, fmt.Sprintf("no enrollment for %q: no group references any certificate of its chain, and the issuer %q of %q is neither presented nor enrolled", d.RegistrationID, cur.Issuer, cur.Subject))
		}
		path = append(path, parent)
		hashes = append(hashes, parentHash)
		constrained = constrained || hasNameConstraints(parent)

		g, pc := lookup(ix, extra, parentHash)
		if g != nil {
			d.Group = g
			d.SigningCertificate = pc.info
			if !g.Enabled() {
				return d.refuse(ReasonGroupDisabled, fmt.Sprintf("enrollment group %q is disabled; it references %s (%s), the first enrolled certificate above %q", g.EnrollmentGroupID, pc.info.SubjectName, pc.info.SHA256Thumbprint, d.RegistrationID))
			}
			if constrained {
				if why := e.checkNameConstraints(path, hashes, now); why != "" {
					return d.refuse(ReasonNameConstraints, why)
				}
			}
			return d.provision(fmt.Sprintf("enrollment group %q is enabled and references %s (%s), the first enrolled certificate above %q", g.EnrollmentGroupID, pc.info.SubjectName, pc.info.SHA256Thumbprint, d.RegistrationID))
		}
		if selfIssued(parent) {
			return d.refuse(ReasonNoEnrollment, fmt.Sprintf("no enrollment for %q: its chain ends at root %q and no group references any certificate of it", d.RegistrationID, parent.Subject))
		}
	}
}

// findParent returns the first candidate issuer of cur whose link verifies:
// presented intermediates first, then enrolled certificates. When
// candidates exist but none verifies, it returns the first failure.
func (e *Evaluator) findParent(cur *x509.Certificate, curHash [32]byte, depth int, presented []*x509.Certificate,
	ix *groupIndex, extra []*anchor, seen [][32]byte, now time.Time, budget *int, p purpose,
) (parent *x509.Certificate, parentHash [32]byte, r Reason, why string) {
	try := func(c *x509.Certificate, h [32]byte) bool {
		for _, s := range seen {
			if s == h {
				return false // a loop of cross-signed certificates
			}
		}
		lr, lwhy := e.checkLink(cur, curHash, c, h, depth, now, budget, p)
		if lr == "" {
			parent, parentHash = c, h
			return true
		}
		if r == "" {
			r, why = lr, lwhy
		}
		return false
	}
	for _, c := range presented {
		if string(c.RawSubject) != string(cur.RawIssuer) || !keyIDsAgree(cur, c) {
			continue
		}
		if try(c, sha256.Sum256(c.Raw)) {
			return parent, parentHash, "", ""
		}
	}
	for _, a := range ix.bySubject[string(cur.RawIssuer)] {
		if keyIDsAgree(cur, a.pc.cert) && try(a.pc.cert, a.pc.hash) {
			return parent, parentHash, "", ""
		}
	}
	for _, a := range extra {
		if string(a.pc.cert.RawSubject) == string(cur.RawIssuer) && keyIDsAgree(cur, a.pc.cert) && try(a.pc.cert, a.pc.hash) {
			return parent, parentHash, "", ""
		}
	}
	return nil, parentHash, r, why
}

// checkNameConstraints runs the standard library verifier over exactly the
// built chain when a CA in it has name constraints: they are intricate
// enough that reimplementing them is the larger risk. A pass is cached per
// (leaf, exact path above it).
func (e *Evaluator) checkNameConstraints(path []*x509.Certificate, hashes [][32]byte, now time.Time) string {
	h := sha256.New()
	for _, x := range hashes[1:] {
		h.Write(x[:])
	}
	k := pairKey{child: hashes[0]}
	h.Sum(k.parent[:0])
	if e.nameOK.has(k) {
		return ""
	}
	roots := x509.NewCertPool()
	roots.AddCert(path[len(path)-1])
	inter := x509.NewCertPool()
	for _, c := range path[1 : len(path)-1] {
		inter.AddCert(c)
	}
	_, err := path[0].Verify(x509.VerifyOptions{
		Roots: roots, Intermediates: inter, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err != nil {
		return fmt.Sprintf("certificate %q is outside the name constraints of its chain: %v", path[0].Subject, err)
	}
	e.nameOK.add(k)
	return ""
}
