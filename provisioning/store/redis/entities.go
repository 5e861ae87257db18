package redisstore

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sort"

	"github.com/dpsbroker/dpsbroker/provisioning"
)

// cachedGet serves one entry from the cache or reads it with one HMGET
// and caches the answer, including "missing".
func cachedGet[T any](ctx context.Context, s *Store, k kind, slotKind byte, id string, m *boundedMap[string, *T], apply func(*T, meta), clone func(*T) *T) (*T, error) {
	key, err := checkID("get "+k.what, id)
	if err != nil {
		return nil, err
	}
	if err := ctxErr(ctx, "get "+k.what); err != nil {
		return nil, err
	}
	if v, ok := lookup(s.cache, true, func() (*T, bool) { return m.get(key) }); ok {
		if v == nil {
			return nil, notFound(k.what, key)
		}
		return clone(v), nil
	}
	st := s.cache.begin(slotOf(slotKind, key), true)
	v, md, found, err := get[T](ctx, s, k, key)
	if err != nil {
		return nil, err
	}
	if found {
		apply(v, md)
	}
	s.cache.insert(st, func() { m.put(key, v) })
	if !found {
		return nil, notFound(k.what, key)
	}
	if st.ok {
		return clone(v), nil // v may now be in the cache
	}
	return v, nil
}

// put encodes a value stripped of store-assigned fields, writes it and
// returns a fresh decoded copy with the new meta applied.
func put[T any](ctx context.Context, s *Store, k kind, id string, stripped *T, ifMatch string, index []string, apply func(*T, meta)) (*T, error) {
	key, err := checkID("put "+k.what, id)
	if err != nil {
		return nil, err
	}
	if err := ctxErr(ctx, "put "+k.what); err != nil {
		return nil, err
	}
	raw, err := json.Marshal(stripped)
	if err != nil {
		return nil, fmt.Errorf("redis store: encode %s %q: %w", k.what, key, err)
	}
	m, err := s.write(ctx, k, key, false, raw, ifMatch, index)
	if err != nil {
		return nil, err
	}
	var out T
	if err := json.Unmarshal(raw, &out); err != nil {
		return nil, fmt.Errorf("redis store: decode %s %q: %w", k.what, key, err)
	}
	apply(&out, m)
	return &out, nil
}

func (s *Store) del(ctx context.Context, k kind, id, ifMatch string) error {
	key, err := checkID("delete "+k.what, id)
	if err != nil {
		return err
	}
	if err := ctxErr(ctx, "delete "+k.what); err != nil {
		return err
	}
	_, err = s.write(ctx, k, key, true, nil, ifMatch, nil)
	return err
}

// ---- individual enrollments ----

func applyEnrollment(e *provisioning.IndividualEnrollment, m meta) {
	c, u := m.created, m.updated
	e.ETag, e.CreatedDateTimeUTC, e.LastUpdatedDateTimeUTC = m.etag, &c, &u
}

// GetEnrollment returns a copy of the enrollment; a hit in the cache makes
// no Redis call, a miss one HMGET.
func (s *Store) GetEnrollment(ctx context.Context, registrationID string) (*provisioning.IndividualEnrollment, error) {
	return cachedGet(ctx, s, kindEnrollment, 'e', registrationID, &s.cache.enr, applyEnrollment, cloneEnrollment)
}

// PutEnrollment writes e (etag-checked) and returns the stored copy.
func (s *Store) PutEnrollment(ctx context.Context, e *provisioning.IndividualEnrollment, ifMatch string) (*provisioning.IndividualEnrollment, error) {
	if e == nil {
		return nil, fmt.Errorf("redis store: put enrollment: nil enrollment")
	}
	c := *e
	c.ETag, c.CreatedDateTimeUTC, c.LastUpdatedDateTimeUTC = "", nil, nil
	return put(ctx, s, kindEnrollment, e.RegistrationID, &c, ifMatch, nil, applyEnrollment)
}

// DeleteEnrollment deletes the enrollment (etag-checked).
func (s *Store) DeleteEnrollment(ctx context.Context, registrationID, ifMatch string) error {
	return s.del(ctx, kindEnrollment, registrationID, ifMatch)
}

// ListEnrollments pages through enrollments in lower-cased ID order; limit
// is clamped to MaxPage.
func (s *Store) ListEnrollments(ctx context.Context, cursor string, limit int) ([]*provisioning.IndividualEnrollment, string, error) {
	vals, metas, next, err := page[provisioning.IndividualEnrollment](ctx, s, kindEnrollment, s.k.ids(kindEnrollment.prefix), cursor, limit)
	for i, v := range vals {
		applyEnrollment(v, metas[i])
	}
	return vals, next, err
}

// ---- enrollment groups ----

func applyGroup(g *provisioning.EnrollmentGroup, m meta) {
	c, u := m.created, m.updated
	g.ETag, g.CreatedDateTimeUTC, g.LastUpdatedDateTimeUTC = m.etag, &c, &u
}

// GetEnrollmentGroup returns a copy of the group, from the cache when it
// can.
func (s *Store) GetEnrollmentGroup(ctx context.Context, groupID string) (*provisioning.EnrollmentGroup, error) {
	return cachedGet(ctx, s, kindGroup, 'g', groupID, &s.cache.grp, applyGroup, cloneGroup)
}

// PutEnrollmentGroup writes g (etag-checked) and indexes its signing
// certificates and CA references. A certificate that does not decode is
// refused.
func (s *Store) PutEnrollmentGroup(ctx context.Context, g *provisioning.EnrollmentGroup, ifMatch string) (*provisioning.EnrollmentGroup, error) {
	if g == nil {
		return nil, fmt.Errorf("redis store: put enrollment group: nil group")
	}
	idx, err := groupIndex(g)
	if err != nil {
		return nil, fmt.Errorf("redis store: put enrollment group %q: %w", g.EnrollmentGroupID, err)
	}
	c := *g
	c.ETag, c.CreatedDateTimeUTC, c.LastUpdatedDateTimeUTC = "", nil, nil
	return put(ctx, s, kindGroup, g.EnrollmentGroupID, &c, ifMatch, idx, applyGroup)
}

// DeleteEnrollmentGroup deletes the group (etag-checked).
func (s *Store) DeleteEnrollmentGroup(ctx context.Context, groupID, ifMatch string) error {
	return s.del(ctx, kindGroup, groupID, ifMatch)
}

// ListEnrollmentGroups returns every group ordered by lower-cased ID. The
// slice and the groups in it are a shared snapshot: callers must not modify
// them. The same slice is returned until a group changes (or, with the
// cache disabled or the subscription down, a new one on every call).
func (s *Store) ListEnrollmentGroups(ctx context.Context) ([]*provisioning.EnrollmentGroup, error) {
	if err := ctxErr(ctx, "list enrollment groups"); err != nil {
		return nil, err
	}
	c := s.cache
	if snap, ok := lookup(c, false, func() ([]*provisioning.EnrollmentGroup, bool) { return c.groups, c.groupsOK }); ok {
		return snap, nil
	}
	st := c.begin(groupsSlot, false)
	vals, metas, _, err := list[provisioning.EnrollmentGroup](ctx, s, kindGroup, s.k.ids(kindGroup.prefix), "-", -1)
	if err != nil {
		return nil, err
	}
	for i, v := range vals {
		applyGroup(v, metas[i])
	}
	c.insert(st, func() {
		if c.groupsOK { // a concurrent reader was first: share its slice
			vals = c.groups
			return
		}
		c.groups, c.groupsOK = vals, true
	})
	return vals, nil
}

// GroupsByCertificate returns copies of the groups that sign with the
// certificate or reference a CA entry holding it, ordered by lower-cased
// group ID. Answers (also empty ones) are cached.
func (s *Store) GroupsByCertificate(ctx context.Context, sha256 [32]byte) ([]*provisioning.EnrollmentGroup, error) {
	if err := ctxErr(ctx, "groups by certificate"); err != nil {
		return nil, err
	}
	c := s.cache
	groups, ok := lookup(c, true, func() ([]*provisioning.EnrollmentGroup, bool) { return c.byCert.get(sha256) })
	if !ok {
		st := c.begin(groupsSlot, true)
		tp := hex.EncodeToString(sha256[:])
		res, err := certScript.Run(ctx, s.rdb, []string{s.k.certIdx(tp)}, s.k.p, tp).Slice()
		if err != nil {
			return nil, s.wrap("groups by certificate", err)
		}
		vals, metas, ids, err := decodeFlat[provisioning.EnrollmentGroup](kindGroup, res)
		if err != nil {
			return nil, err
		}
		order := make([]int, len(vals))
		for i := range order {
			order[i] = i
			applyGroup(vals[i], metas[i])
		}
		sort.Slice(order, func(a, b int) bool { return ids[order[a]] < ids[order[b]] })
		groups = make([]*provisioning.EnrollmentGroup, len(vals))
		for i, j := range order {
			groups[i] = vals[j]
		}
		c.insert(st, func() { c.byCert.put(sha256, groups) })
	}
	out := make([]*provisioning.EnrollmentGroup, len(groups))
	for i, g := range groups {
		out[i] = cloneGroup(g)
	}
	return out, nil
}

// ---- CA certificates ----

func applyCA(ca *provisioning.CACertificate, m meta) {
	c, u := m.created, m.updated
	ca.ETag, ca.Created, ca.Updated = m.etag, &c, &u
}

// GetCACertificate returns a copy of the CA certificate entry, from the
// cache when it can.
func (s *Store) GetCACertificate(ctx context.Context, name string) (*provisioning.CACertificate, error) {
	return cachedGet(ctx, s, kindCA, 'c', name, &s.cache.ca, applyCA, cloneCA)
}

// PutCACertificate writes the CA entry (etag-checked) and indexes its
// certificate's thumbprint. A certificate that does not decode is refused.
func (s *Store) PutCACertificate(ctx context.Context, ca *provisioning.CACertificate, ifMatch string) (*provisioning.CACertificate, error) {
	if ca == nil {
		return nil, fmt.Errorf("redis store: put CA certificate: nil certificate")
	}
	tp, err := certThumbprint("certificate", ca.Certificate)
	if err != nil {
		return nil, fmt.Errorf("redis store: put CA certificate %q: %w", ca.Name, err)
	}
	c := *ca
	c.ETag, c.Created, c.Updated = "", nil, nil
	return put(ctx, s, kindCA, ca.Name, &c, ifMatch, []string{"s:ix:cacert:" + tp}, applyCA)
}

// DeleteCACertificate deletes the CA entry (etag-checked).
func (s *Store) DeleteCACertificate(ctx context.Context, name, ifMatch string) error {
	return s.del(ctx, kindCA, name, ifMatch)
}

// ListCACertificates returns every CA entry ordered by lower-cased name.
func (s *Store) ListCACertificates(ctx context.Context) ([]*provisioning.CACertificate, error) {
	if err := ctxErr(ctx, "list CA certificates"); err != nil {
		return nil, err
	}
	vals, metas, _, err := list[provisioning.CACertificate](ctx, s, kindCA, s.k.ids(kindCA.prefix), "-", -1)
	if err != nil {
		return nil, err
	}
	for i, v := range vals {
		applyCA(v, metas[i])
	}
	return vals, nil
}

// ---- registration records ----

func applyRegistration(r *provisioning.RegistrationState, m meta) {
	c, u := m.created, m.updated
	r.ETag, r.CreatedDateTimeUTC, r.LastUpdatedDateTimeUTC = m.etag, &c, &u
}

// GetRegistration returns the registration record (never cached: only the
// device's own registration reads it).
func (s *Store) GetRegistration(ctx context.Context, registrationID string) (*provisioning.RegistrationState, error) {
	key, err := checkID("get registration", registrationID)
	if err != nil {
		return nil, err
	}
	if err := ctxErr(ctx, "get registration"); err != nil {
		return nil, err
	}
	v, m, found, err := get[provisioning.RegistrationState](ctx, s, kindRegistration, key)
	if err != nil {
		return nil, err
	}
	if !found {
		return nil, notFound(kindRegistration.what, key)
	}
	applyRegistration(v, m)
	return v, nil
}

// PutRegistration writes the record (etag-checked) and files it under the
// group that admitted it.
func (s *Store) PutRegistration(ctx context.Context, r *provisioning.RegistrationState, ifMatch string) (*provisioning.RegistrationState, error) {
	if r == nil {
		return nil, fmt.Errorf("redis store: put registration: nil record")
	}
	var idx []string
	if r.EnrollmentGroupID != "" {
		idx = []string{"z:ix:reggrp:" + provisioning.RegistrationKey(r.EnrollmentGroupID)}
	}
	c := *r
	c.ETag, c.CreatedDateTimeUTC, c.LastUpdatedDateTimeUTC = "", nil, nil
	return put(ctx, s, kindRegistration, r.RegistrationID, &c, ifMatch, idx, applyRegistration)
}

// DeleteRegistration deletes the record (etag-checked).
func (s *Store) DeleteRegistration(ctx context.Context, registrationID, ifMatch string) error {
	return s.del(ctx, kindRegistration, registrationID, ifMatch)
}

// ListRegistrations pages through records in lower-cased ID order,
// optionally only those admitted by groupID; limit is clamped to MaxPage.
func (s *Store) ListRegistrations(ctx context.Context, groupID, cursor string, limit int) ([]*provisioning.RegistrationState, string, error) {
	set := s.k.ids(kindRegistration.prefix)
	if groupID != "" {
		set = s.k.p + "ix:reggrp:" + provisioning.RegistrationKey(groupID)
	}
	vals, metas, next, err := page[provisioning.RegistrationState](ctx, s, kindRegistration, set, cursor, limit)
	for i, v := range vals {
		applyRegistration(v, metas[i])
	}
	return vals, next, err
}
