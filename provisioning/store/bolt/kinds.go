package bolt

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"slices"

	"github.com/dpsbroker/dpsbroker/provisioning"
	bolt "go.etcd.io/bbolt"
)

var enrollments = &kind[provisioning.IndividualEnrollment]{
	name:   "enrollment",
	bucket: bucketEnrollments,
	change: provisioning.ChangeEnrollment,
	stamps: func(e *provisioning.IndividualEnrollment) stamps {
		return stamps{&e.ETag, &e.CreatedDateTimeUTC, &e.LastUpdatedDateTimeUTC}
	},
}

var groups = &kind[provisioning.EnrollmentGroup]{
	name:   "enrollment group",
	bucket: bucketGroups,
	change: provisioning.ChangeGroup,
	stamps: func(g *provisioning.EnrollmentGroup) stamps {
		return stamps{&g.ETag, &g.CreatedDateTimeUTC, &g.LastUpdatedDateTimeUTC}
	},
	prepare: func(g *provisioning.EnrollmentGroup) error { _, err := groupRefsOf(g); return err },
	index:   indexGroup,
}

var cas = &kind[provisioning.CACertificate]{
	name:   "CA certificate",
	bucket: bucketCAs,
	change: provisioning.ChangeCA,
	stamps: func(c *provisioning.CACertificate) stamps {
		return stamps{&c.ETag, &c.Created, &c.Updated}
	},
	prepare: func(c *provisioning.CACertificate) error {
		_, err := thumbprint("certificate", c.Certificate)
		return err
	},
	index: indexCA,
}

var registrations = &kind[provisioning.RegistrationState]{
	name:   "registration",
	bucket: bucketRegistrations,
	stamps: func(r *provisioning.RegistrationState) stamps {
		return stamps{&r.ETag, &r.CreatedDateTimeUTC, &r.LastUpdatedDateTimeUTC}
	},
	index: indexRegistration,
}

// GetEnrollment implements provisioning.EnrollmentStore.
func (s *Store) GetEnrollment(ctx context.Context, registrationID string) (*provisioning.IndividualEnrollment, error) {
	return enrollments.get(s, ctx, registrationID)
}

// PutEnrollment implements provisioning.EnrollmentStore.
func (s *Store) PutEnrollment(ctx context.Context, e *provisioning.IndividualEnrollment, ifMatch string) (*provisioning.IndividualEnrollment, error) {
	if e == nil {
		return nil, fmt.Errorf("put enrollment: nil entry")
	}
	return enrollments.put(s, ctx, e.RegistrationID, e, ifMatch)
}

// DeleteEnrollment implements provisioning.EnrollmentStore.
func (s *Store) DeleteEnrollment(ctx context.Context, registrationID, ifMatch string) error {
	return enrollments.delete(s, ctx, registrationID, ifMatch)
}

// ListEnrollments implements provisioning.EnrollmentStore. The cursor is the
// last key of the previous page.
func (s *Store) ListEnrollments(ctx context.Context, cursor string, limit int) ([]*provisioning.IndividualEnrollment, string, error) {
	return page[provisioning.IndividualEnrollment](s, ctx, bucketEnrollments, nil, nil, cursor, limit)
}

// GetEnrollmentGroup implements provisioning.GroupStore.
func (s *Store) GetEnrollmentGroup(ctx context.Context, groupID string) (*provisioning.EnrollmentGroup, error) {
	return groups.get(s, ctx, groupID)
}

// PutEnrollmentGroup implements provisioning.GroupStore. A group whose
// signing certificate does not decode is refused with a
// *provisioning.ValidationError.
func (s *Store) PutEnrollmentGroup(ctx context.Context, g *provisioning.EnrollmentGroup, ifMatch string) (*provisioning.EnrollmentGroup, error) {
	if g == nil {
		return nil, fmt.Errorf("put enrollment group: nil entry")
	}
	out, err := groups.put(s, ctx, g.EnrollmentGroupID, g, ifMatch)
	if err == nil {
		s.groupsChanged()
	}
	return out, err
}

// DeleteEnrollmentGroup implements provisioning.GroupStore.
func (s *Store) DeleteEnrollmentGroup(ctx context.Context, groupID, ifMatch string) error {
	err := groups.delete(s, ctx, groupID, ifMatch)
	if err == nil {
		s.groupsChanged()
	}
	return err
}

// GetCACertificate implements provisioning.CAStore.
func (s *Store) GetCACertificate(ctx context.Context, name string) (*provisioning.CACertificate, error) {
	return cas.get(s, ctx, name)
}

// PutCACertificate implements provisioning.CAStore. A certificate that does
// not decode is refused with a *provisioning.ValidationError.
func (s *Store) PutCACertificate(ctx context.Context, c *provisioning.CACertificate, ifMatch string) (*provisioning.CACertificate, error) {
	if c == nil {
		return nil, fmt.Errorf("put CA certificate: nil entry")
	}
	return cas.put(s, ctx, c.Name, c, ifMatch)
}

// DeleteCACertificate implements provisioning.CAStore.
func (s *Store) DeleteCACertificate(ctx context.Context, name, ifMatch string) error {
	return cas.delete(s, ctx, name, ifMatch)
}

// ListCACertificates implements provisioning.CAStore, in name order.
func (s *Store) ListCACertificates(ctx context.Context) ([]*provisioning.CACertificate, error) {
	var out []*provisioning.CACertificate
	err := s.view(ctx, func(tx *bolt.Tx) error {
		return tx.Bucket(bucketCAs).ForEach(func(_, v []byte) error {
			c, err := decode[provisioning.CACertificate](v)
			out = append(out, c)
			return err
		})
	})
	return out, err
}

// GetRegistration implements provisioning.RegistrationStore.
func (s *Store) GetRegistration(ctx context.Context, registrationID string) (*provisioning.RegistrationState, error) {
	key, err := entryKey(registrations.name, registrationID)
	if err != nil {
		return nil, err
	}
	// The overlay first: an entry leaves it only once bbolt has it.
	if raw := s.overlay.registration(key); raw != nil && ctx.Err() == nil {
		return decode[provisioning.RegistrationState](raw)
	}
	return registrations.getKey(s, ctx, registrationID, key)
}

// PutRegistration implements provisioning.RegistrationStore.
func (s *Store) PutRegistration(ctx context.Context, r *provisioning.RegistrationState, ifMatch string) (*provisioning.RegistrationState, error) {
	if r == nil {
		return nil, fmt.Errorf("put registration: nil entry")
	}
	return registrations.put(s, ctx, r.RegistrationID, r, ifMatch)
}

// DeleteRegistration implements provisioning.RegistrationStore.
func (s *Store) DeleteRegistration(ctx context.Context, registrationID, ifMatch string) error {
	return registrations.delete(s, ctx, registrationID, ifMatch)
}

// ListRegistrations implements provisioning.RegistrationStore; a group
// filter walks the group -> registration index.
func (s *Store) ListRegistrations(ctx context.Context, groupID, cursor string, limit int) ([]*provisioning.RegistrationState, string, error) {
	if err := s.flushJournal(ctx); err != nil {
		return nil, "", err
	}
	if groupID == "" {
		return page[provisioning.RegistrationState](s, ctx, bucketRegistrations, nil, nil, cursor, limit)
	}
	prefix := lenPrefix(provisioning.RegistrationKey(groupID))
	return page[provisioning.RegistrationState](s, ctx, bucketRegistrations, bucketRegByGroup, prefix, cursor, limit)
}

// lenPrefix encodes s with a 2-byte length so that a prefix scan for one
// name never matches a longer name that starts with it.
func lenPrefix(s string) []byte {
	b := make([]byte, 2, 2+len(s))
	binary.BigEndian.PutUint16(b, uint16(len(s)))
	return append(b, s...)
}

func indexRegistration(tx *bolt.Tx, key []byte, old, cur *provisioning.RegistrationState) error {
	var oldGroup, newGroup string
	if old != nil {
		oldGroup = old.EnrollmentGroupID
	}
	if cur != nil {
		newGroup = cur.EnrollmentGroupID
	}
	return moveGroupIndex(tx.Bucket(bucketRegByGroup), key, oldGroup, newGroup)
}

// moveGroupIndex files registration key under newGroup instead of
// oldGroup in the group -> registration index ("" for none). Nothing is
// written when the group stays the same: a returning device's entry is
// already there.
func moveGroupIndex(idx *bolt.Bucket, key []byte, oldGroup, newGroup string) error {
	oldG, newG := provisioning.RegistrationKey(oldGroup), provisioning.RegistrationKey(newGroup)
	if oldG == newG {
		return nil
	}
	if oldG != "" {
		if err := idx.Delete(append(lenPrefix(oldG), key...)); err != nil {
			return err
		}
	}
	if newG != "" {
		return idx.Put(append(lenPrefix(newG), key...), nil)
	}
	return nil
}

// groupRefs is what a group is found by: the thumbprints of its signing
// certificates and the (lower-cased) names of the CA entries it references.
type groupRefs struct {
	thumbs  [][32]byte
	caNames []string
}

func groupRefsOf(g *provisioning.EnrollmentGroup) (groupRefs, error) {
	var refs groupRefs
	x := g.Attestation.X509
	if x == nil {
		return refs, nil
	}
	if sc := x.SigningCertificates; sc != nil {
		for _, c := range []struct {
			field string
			cert  *provisioning.X509CertificateWithInfo
		}{
			{"attestation.x509.signingCertificates.primary.certificate", sc.Primary},
			{"attestation.x509.signingCertificates.secondary.certificate", sc.Secondary},
		} {
			if c.cert == nil || c.cert.Certificate == "" {
				continue
			}
			th, err := thumbprint(c.field, c.cert.Certificate)
			if err != nil {
				return refs, err
			}
			refs.thumbs = append(refs.thumbs, th)
		}
	}
	if ca := x.CAReferences; ca != nil {
		for _, name := range []string{ca.Primary, ca.Secondary} {
			if len(name) > maxKeyLen {
				return refs, &provisioning.ValidationError{Problems: []provisioning.FieldError{{
					Field: "attestation.x509.caReferences", Message: fmt.Sprintf("name is longer than %d bytes", maxKeyLen)}}}
			}
			if name != "" {
				refs.caNames = append(refs.caNames, provisioning.RegistrationKey(name))
			}
		}
	}
	return refs, nil
}

// thumbprint is the SHA-256 thumbprint of a certificate field, decoded by
// the domain's one rule (provisioning.ParseCertificate), so that the store
// indexes exactly the certificates the evaluator can match. field names it
// in the validation error.
func thumbprint(field, text string) ([32]byte, error) {
	cert, err := provisioning.ParseCertificate(text)
	if err != nil {
		return [32]byte{}, &provisioning.ValidationError{Problems: []provisioning.FieldError{{Field: field, Message: err.Error()}}}
	}
	return provisioning.Thumbprint(cert), nil
}

func indexGroup(tx *bolt.Tx, key []byte, old, cur *provisioning.EnrollmentGroup) error {
	thumbs, refs := tx.Bucket(bucketGroupThumbs), tx.Bucket(bucketGroupCARefs)
	if old != nil {
		r, err := groupRefsOf(old)
		if err != nil {
			return fmt.Errorf("stored group %q: %w", key, err)
		}
		for _, th := range r.thumbs {
			if err := thumbs.Delete(append(th[:], key...)); err != nil {
				return err
			}
		}
		for _, name := range r.caNames {
			if err := refs.Delete(append(lenPrefix(name), key...)); err != nil {
				return err
			}
		}
	}
	if cur != nil {
		r, err := groupRefsOf(cur)
		if err != nil {
			return err
		}
		for _, th := range r.thumbs {
			if err := thumbs.Put(append(th[:], key...), nil); err != nil {
				return err
			}
		}
		for _, name := range r.caNames {
			if err := refs.Put(append(lenPrefix(name), key...), nil); err != nil {
				return err
			}
		}
	}
	return nil
}

func indexCA(tx *bolt.Tx, key []byte, old, cur *provisioning.CACertificate) error {
	idx := tx.Bucket(bucketCAThumbs)
	if old != nil {
		if th, err := thumbprint("certificate", old.Certificate); err == nil {
			if err := idx.Delete(append(th[:], key...)); err != nil {
				return err
			}
		}
	}
	if cur != nil {
		th, err := thumbprint("certificate", cur.Certificate)
		if err != nil {
			return err
		}
		return idx.Put(append(th[:], key...), nil)
	}
	return nil
}

// GroupsByCertificate implements provisioning.GroupStore. The result holds
// fresh copies, ordered by group key; CA entries match whether or not they
// are verified (the service decides that).
func (s *Store) GroupsByCertificate(ctx context.Context, sha256 [32]byte) ([]*provisioning.EnrollmentGroup, error) {
	var out []*provisioning.EnrollmentGroup
	err := s.view(ctx, func(tx *bolt.Tx) error {
		var keys [][]byte
		c := tx.Bucket(bucketGroupThumbs).Cursor()
		for k, _ := c.Seek(sha256[:]); k != nil && bytes.HasPrefix(k, sha256[:]); k, _ = c.Next() {
			keys = append(keys, bytes.Clone(k[len(sha256):]))
		}
		refs := tx.Bucket(bucketGroupCARefs).Cursor()
		c = tx.Bucket(bucketCAThumbs).Cursor()
		for k, _ := c.Seek(sha256[:]); k != nil && bytes.HasPrefix(k, sha256[:]); k, _ = c.Next() {
			prefix := lenPrefix(string(k[len(sha256):]))
			for r, _ := refs.Seek(prefix); r != nil && bytes.HasPrefix(r, prefix); r, _ = refs.Next() {
				keys = append(keys, bytes.Clone(r[len(prefix):]))
			}
		}
		slices.SortFunc(keys, bytes.Compare)
		keys = slices.CompactFunc(keys, bytes.Equal)
		b := tx.Bucket(bucketGroups)
		for _, k := range keys {
			raw := b.Get(k)
			if raw == nil {
				return fmt.Errorf("thumbprint index names missing group %q", k)
			}
			g, err := decode[provisioning.EnrollmentGroup](raw)
			if err != nil {
				return err
			}
			out = append(out, g)
		}
		return nil
	})
	return out, err
}

// ListEnrollmentGroups implements provisioning.GroupStore. It returns the
// same slice until a group is written; callers must not modify it.
func (s *Store) ListEnrollmentGroups(ctx context.Context) ([]*provisioning.EnrollmentGroup, error) {
	s.groupMu.Lock()
	if s.groupsOK {
		snap := s.groups
		s.groupMu.Unlock()
		return snap, nil
	}
	gen := s.groupGen
	s.groupMu.Unlock()

	var all []*provisioning.EnrollmentGroup
	err := s.view(ctx, func(tx *bolt.Tx) error {
		return tx.Bucket(bucketGroups).ForEach(func(_, v []byte) error {
			g, err := decode[provisioning.EnrollmentGroup](v)
			all = append(all, g)
			return err
		})
	})
	if err != nil {
		return nil, err
	}
	s.groupMu.Lock()
	defer s.groupMu.Unlock()
	if s.groupsOK {
		// Another caller built it first: share theirs.
		return s.groups, nil
	}
	if s.groupGen == gen {
		s.groups, s.groupsOK = all, true
	}
	return all, nil
}

// groupsChanged drops the snapshot after a committed group write, before
// the write returns, so the writer reads its own write.
func (s *Store) groupsChanged() {
	s.groupMu.Lock()
	s.groupGen++
	s.groups, s.groupsOK = nil, false
	s.groupMu.Unlock()
}
