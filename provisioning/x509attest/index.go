package x509attest

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/dpsbroker/dpsbroker/provisioning"
)

// anchor is a certificate that enrollment groups reference, with those
// groups in snapshot order.
type anchor struct {
	pc     *parsedCert
	groups []*provisioning.EnrollmentGroup
}

// decider picks the group that decides for this certificate. Two groups
// holding one certificate is a configuration mistake; failing closed, a
// disabled one wins over enabled ones, otherwise the first in store order.
func (a *anchor) decider() *provisioning.EnrollmentGroup {
	for _, g := range a.groups {
		if !g.Enabled() {
			return g
		}
	}
	return a.groups[0]
}

// caRef is a group's reference to an uploaded CA certificate by name. It is
// resolved on every decision, because the certificate under a name can be
// replaced without the group changing.
type caRef struct {
	group *provisioning.EnrollmentGroup
	name  string
}

// groupIndex is derived from one snapshot of ListEnrollmentGroups: the X.509
// groups' signing certificates by SHA-256 and by subject, and the CA
// references left to resolve.
type groupIndex struct {
	first     **provisioning.EnrollmentGroup // identity of the snapshot slice
	n         int
	byHash    map[[32]byte]*anchor
	bySubject map[string][]*anchor
	caRefs    []caRef
}

// matches reports whether the index was built from exactly this slice. The
// store contract returns the same slice until a group changes, so identity
// (first element's address and length) is the cheap test.
func (ix *groupIndex) matches(groups []*provisioning.EnrollmentGroup) bool {
	if len(groups) != ix.n {
		return false
	}
	return len(groups) == 0 || &groups[0] == ix.first
}

// index returns the index of the groups of attestation type typ that hold
// certificates, cached in slot for this snapshot.
func (e *Evaluator) index(groups []*provisioning.EnrollmentGroup, typ provisioning.AttestationType, slot *atomic.Pointer[groupIndex]) *groupIndex {
	if ix := slot.Load(); ix != nil && ix.matches(groups) {
		return ix
	}
	ix := &groupIndex{
		n:         len(groups),
		byHash:    make(map[[32]byte]*anchor),
		bySubject: make(map[string][]*anchor),
	}
	if len(groups) > 0 {
		ix.first = &groups[0]
	}
	for _, g := range groups {
		if g == nil || g.Attestation.Type != typ || g.Attestation.X509 == nil {
			continue // symmetric-key groups, and groups of the other kind
		}
		x := g.Attestation.X509
		if sc := x.SigningCertificates; sc != nil {
			for _, c := range []*provisioning.X509CertificateWithInfo{sc.Primary, sc.Secondary} {
				if c == nil || c.Certificate == "" {
					continue
				}
				ix.add(e.parsed(c.Certificate, "group "+g.EnrollmentGroupID), g)
			}
		}
		if r := x.CAReferences; r != nil {
			for _, name := range []string{r.Primary, r.Secondary} {
				if name != "" {
					ix.caRefs = append(ix.caRefs, caRef{group: g, name: name})
				}
			}
		}
	}
	slot.Store(ix)
	return ix
}

func (ix *groupIndex) add(pc *parsedCert, g *provisioning.EnrollmentGroup) {
	if pc.cert == nil {
		return
	}
	a := ix.byHash[pc.hash]
	if a == nil {
		a = &anchor{pc: pc}
		ix.byHash[pc.hash] = a
		subj := string(pc.cert.RawSubject)
		ix.bySubject[subj] = append(ix.bySubject[subj], a)
	}
	for _, have := range a.groups {
		if have == g { // primary and secondary may be the same certificate
			return
		}
	}
	a.groups = append(a.groups, g)
}

// parsed parses enrollment certificate text through the cache and logs an
// unusable one the first time it is seen.
func (e *Evaluator) parsed(text, owner string) *parsedCert {
	pc, fresh := e.parse.get(text)
	if fresh && pc.err != nil {
		e.log.Warn("x509attest: ignoring an unusable enrolled certificate", "owner", owner, "err", pc.err)
	}
	return pc
}

// resolveCARefs turns the index's CA references into anchors for this
// decision. Unverified CA certificates (no proof of possession) and missing
// ones do not anchor anything; any other store error fails the decision.
func (e *Evaluator) resolveCARefs(ctx context.Context, ix *groupIndex) ([]*anchor, error) {
	if len(ix.caRefs) == 0 {
		return nil, nil
	}
	var out []*anchor
	for _, r := range ix.caRefs {
		ca, err := e.src.GetCACertificate(ctx, r.name)
		if errors.Is(err, provisioning.ErrNotFound) || (err == nil && ca == nil) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("x509attest: read CA certificate %q of group %q: %w", r.name, r.group.EnrollmentGroupID, err)
		}
		if !ca.IsVerified {
			continue
		}
		pc := e.parsed(ca.Certificate, "CA certificate "+r.name)
		if pc.cert == nil {
			continue
		}
		if a := findAnchor(out, pc.hash); a != nil {
			a.groups = append(a.groups, r.group)
			continue
		}
		out = append(out, &anchor{pc: pc, groups: []*provisioning.EnrollmentGroup{r.group}})
	}
	return out, nil
}

func findAnchor(list []*anchor, h [32]byte) *anchor {
	for _, a := range list {
		if a.pc.hash == h {
			return a
		}
	}
	return nil
}

// lookup returns the groups' decider for the certificate with hash h, from
// signing certificates and resolved CA references together, with the
// certificate that matched.
func lookup(ix *groupIndex, extra []*anchor, h [32]byte) (*provisioning.EnrollmentGroup, *parsedCert) {
	a := ix.byHash[h]
	b := findAnchor(extra, h)
	switch {
	case a == nil && b == nil:
		return nil, nil
	case b == nil:
		return a.decider(), a.pc
	case a == nil:
		return b.decider(), b.pc
	}
	merged := anchor{pc: a.pc, groups: append(append([]*provisioning.EnrollmentGroup(nil), a.groups...), b.groups...)}
	return merged.decider(), a.pc
}
