package storetest

import (
	"slices"
	"testing"

	"github.com/dpsbroker/dpsbroker/provisioning"
)

func groupIDs(groups []*provisioning.EnrollmentGroup) []string {
	ids := make([]string, len(groups))
	for i, g := range groups {
		ids[i] = g.EnrollmentGroupID
	}
	return ids
}

// runGroupSnapshot checks the shared-snapshot contract of
// ListEnrollmentGroups: the same slice while groups are unchanged, a new
// one (read-your-writes) after any group write.
func runGroupSnapshot(t *testing.T, newStore func(t *testing.T) provisioning.Store) {
	s, ctx := newStore(t), ctxT(t)
	empty, err := s.ListEnrollmentGroups(ctx)
	if err != nil || len(empty) != 0 {
		t.Fatalf("empty store: %v, %v", groupIDs(empty), err)
	}
	for _, id := range []string{"g-b", "G-a", "g-c"} {
		if _, err := s.PutEnrollmentGroup(ctx, testGroup(id, "hub"), ""); err != nil {
			t.Fatal(err)
		}
	}
	list := func() []*provisioning.EnrollmentGroup {
		t.Helper()
		l, err := s.ListEnrollmentGroups(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	same := func(a, b []*provisioning.EnrollmentGroup) bool {
		return len(a) == len(b) && len(a) > 0 && &a[0] == &b[0]
	}
	first := list()
	if got, want := groupIDs(first), []string{"G-a", "g-b", "g-c"}; !slices.Equal(got, want) {
		t.Fatalf("ListEnrollmentGroups = %v, want %v", got, want)
	}
	if second := list(); !same(first, second) {
		t.Errorf("unchanged groups: got a different slice")
	}
	// Writes to other entry types leave the snapshot alone.
	if _, err := s.PutEnrollment(ctx, testEnrollment("e-1", "d"), ""); err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutRegistration(ctx, testRegistration("e-1", "g-b", "hub"), ""); err != nil {
		t.Fatal(err)
	}
	if again := list(); !same(first, again) {
		t.Errorf("after an enrollment write: got a different slice")
	}

	// Replacing a group: new slice with the new content, then stable again.
	if _, err := s.PutEnrollmentGroup(ctx, testGroup("g-b", "hub-2"), ""); err != nil {
		t.Fatal(err)
	}
	afterPut := list()
	if same(first, afterPut) {
		t.Fatalf("after a group write: got the old slice")
	}
	if len(afterPut) != 3 || afterPut[1].IoTHubHostName != "hub-2" {
		t.Errorf("after a group write: %v, g-b hub %q", groupIDs(afterPut), afterPut[1].IoTHubHostName)
	}
	if again := list(); !same(afterPut, again) {
		t.Errorf("unchanged groups after a rebuild: got a different slice")
	}
	// Deleting a group.
	if err := s.DeleteEnrollmentGroup(ctx, "G-A", ""); err != nil {
		t.Fatal(err)
	}
	afterDelete := list()
	if same(afterPut, afterDelete) {
		t.Fatalf("after a group delete: got the old slice")
	}
	if got, want := groupIDs(afterDelete), []string{"g-b", "g-c"}; !slices.Equal(got, want) {
		t.Errorf("after delete: %v, want %v", got, want)
	}
	// A new group that sorts first.
	if _, err := s.PutEnrollmentGroup(ctx, testGroup("a-first", "hub"), ""); err != nil {
		t.Fatal(err)
	}
	if got, want := groupIDs(list()), []string{"a-first", "g-b", "g-c"}; !slices.Equal(got, want) {
		t.Errorf("after create: %v, want %v", got, want)
	}
}

// x509Group is a group whose attestation holds signing certificates
// (primary as PEM, secondary as base64 DER) or CA references.
func x509Group(id string, primary, secondary *Certificate, caPrimary, caSecondary string) *provisioning.EnrollmentGroup {
	g := testGroup(id, "hub")
	x := &provisioning.X509Attestation{}
	if primary != nil || secondary != nil {
		x.SigningCertificates = &provisioning.X509Certificates{}
		if primary != nil {
			x.SigningCertificates.Primary = &provisioning.X509CertificateWithInfo{Certificate: primary.PEM}
		}
		if secondary != nil {
			x.SigningCertificates.Secondary = &provisioning.X509CertificateWithInfo{Certificate: secondary.Base64}
		}
	}
	if caPrimary != "" || caSecondary != "" {
		x.CAReferences = &provisioning.X509CAReferences{Primary: caPrimary, Secondary: caSecondary}
	}
	g.Attestation = provisioning.AttestationMechanism{Type: provisioning.AttestationX509, X509: x}
	return g
}

func runGroupsByCertificate(t *testing.T, newStore func(t *testing.T) provisioning.Store) {
	s, ctx := newStore(t), ctxT(t)
	c1 := NewCACertificate(t, "signing-1")
	c2 := NewCACertificate(t, "signing-2")
	c3 := NewCACertificate(t, "uploaded-root")
	c4 := NewCACertificate(t, "uploaded-other")
	c5 := NewCACertificate(t, "signing-5")
	c6 := NewCACertificate(t, "uploaded-root-renewed")
	unknown := NewCACertificate(t, "unknown")

	check := func(what string, c *Certificate, want ...string) {
		t.Helper()
		got, err := s.GroupsByCertificate(ctx, c.SHA256)
		if err != nil {
			t.Errorf("%s: GroupsByCertificate(%s): %v", what, c.Cert.Subject.CommonName, err)
			return
		}
		if want == nil {
			want = []string{}
		}
		if ids := groupIDs(got); !slices.Equal(ids, want) {
			t.Errorf("%s: GroupsByCertificate(%s) = %v, want %v", what, c.Cert.Subject.CommonName, ids, want)
		}
	}

	check("empty store", c1)
	put := func(g *provisioning.EnrollmentGroup) {
		t.Helper()
		if _, err := s.PutEnrollmentGroup(ctx, g, ""); err != nil {
			t.Fatalf("put group %s: %v", g.EnrollmentGroupID, err)
		}
	}
	putCA := func(name string, c *Certificate) {
		t.Helper()
		if _, err := s.PutCACertificate(ctx, &provisioning.CACertificate{Name: name, Certificate: c.PEM, IsVerified: true}, ""); err != nil {
			t.Fatalf("put CA %s: %v", name, err)
		}
	}
	put(x509Group("grp-2", c1, nil, "", ""))
	put(x509Group("grp-1", c1, c2, "", ""))
	// CA references are names, case-insensitive like every key.
	put(x509Group("grp-3", nil, nil, "Root-CA", "other-ca"))
	put(testGroup("grp-symmetric", "hub"))
	putCA("root-ca", c3)

	check("signing primary, ordered by group ID", c1, "grp-1", "grp-2")
	check("signing secondary (base64 DER)", c2, "grp-1")
	check("CA reference primary", c3, "grp-3")
	check("CA reference to a name not uploaded yet", c4)
	check("unknown certificate", unknown)

	// Uploading the referenced CA afterwards makes the group findable.
	putCA("Other-CA", c4)
	check("CA reference secondary, uploaded after the group", c4, "grp-3")

	// Replacing a group's certificate moves it in the index.
	put(x509Group("grp-1", c5, nil, "", ""))
	check("after replacing grp-1", c1, "grp-2")
	check("after replacing grp-1", c2)
	check("after replacing grp-1", c5, "grp-1")

	// Deleting a group removes it.
	if err := s.DeleteEnrollmentGroup(ctx, "grp-2", ""); err != nil {
		t.Fatal(err)
	}
	check("after deleting grp-2", c1)

	// Replacing the referenced CA certificate re-points the reference.
	putCA("root-ca", c6)
	check("after replacing the CA certificate", c3)
	check("after replacing the CA certificate", c6, "grp-3")

	// Deleting the CA certificate ends the match; the group stays.
	if err := s.DeleteCACertificate(ctx, "ROOT-CA", ""); err != nil {
		t.Fatal(err)
	}
	check("after deleting the CA certificate", c6)
	check("other reference still resolves", c4, "grp-3")

	// A group may switch from CA references to signing certificates.
	put(x509Group("grp-3", c6, nil, "", ""))
	check("grp-3 now signs with c6", c6, "grp-3")
	check("grp-3 dropped its references", c4)

	// Two CA entries with the same certificate: each referencing group is
	// found once.
	putCA("copy-of-other", c4)
	put(x509Group("grp-4", nil, nil, "other-ca", "copy-of-other"))
	check("two names for one certificate", c4, "grp-4")

	if err := s.DeleteEnrollmentGroup(ctx, "grp-4", ""); err != nil {
		t.Fatal(err)
	}
	check("after deleting grp-4", c4)
}
