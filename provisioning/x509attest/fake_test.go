package x509attest_test

import (
	"context"
	"crypto/x509"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/dpsbroker/dpsbroker/provisioning"
	"github.com/dpsbroker/dpsbroker/provisioning/pkitest"
)

// fakeEnrollments is an in-memory Enrollments with the store's snapshot
// contract: ListEnrollmentGroups returns the same slice until a group
// changes.
type fakeEnrollments struct {
	mu          sync.Mutex
	enrollments map[string]*provisioning.IndividualEnrollment
	groups      []*provisioning.EnrollmentGroup
	cas         map[string]*provisioning.CACertificate
	err         error // returned by every call when set
	caErr       error // returned by GetCACertificate when set
}

var errNotFound = fmt.Errorf("fake: %w", provisioning.ErrNotFound)

func newFake() *fakeEnrollments {
	return &fakeEnrollments{
		enrollments: map[string]*provisioning.IndividualEnrollment{},
		cas:         map[string]*provisioning.CACertificate{},
	}
}

func (f *fakeEnrollments) GetEnrollment(_ context.Context, id string) (*provisioning.IndividualEnrollment, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return nil, f.err
	}
	if e, ok := f.enrollments[provisioning.RegistrationKey(id)]; ok {
		return e, nil
	}
	return nil, errNotFound
}

func (f *fakeEnrollments) ListEnrollmentGroups(context.Context) ([]*provisioning.EnrollmentGroup, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return nil, f.err
	}
	return f.groups, nil
}

func (f *fakeEnrollments) GetCACertificate(_ context.Context, name string) (*provisioning.CACertificate, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return nil, f.err
	}
	if f.caErr != nil {
		return nil, f.caErr
	}
	if c, ok := f.cas[name]; ok {
		return c, nil
	}
	return nil, errNotFound
}

// putGroup replaces or adds a group in a new snapshot, ordered by ID.
func (f *fakeEnrollments) putGroup(g *provisioning.EnrollmentGroup) *fakeEnrollments {
	f.mu.Lock()
	defer f.mu.Unlock()
	next := slices.DeleteFunc(slices.Clone(f.groups), func(h *provisioning.EnrollmentGroup) bool {
		return h.EnrollmentGroupID == g.EnrollmentGroupID
	})
	next = append(next, g)
	slices.SortFunc(next, func(a, b *provisioning.EnrollmentGroup) int {
		return strings.Compare(a.EnrollmentGroupID, b.EnrollmentGroupID)
	})
	f.groups = next
	return f
}

func (f *fakeEnrollments) putEnrollment(e *provisioning.IndividualEnrollment) *fakeEnrollments {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.enrollments[provisioning.RegistrationKey(e.RegistrationID)] = e
	return f
}

func (f *fakeEnrollments) putCA(c *provisioning.CACertificate) *fakeEnrollments {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cas[c.Name] = c
	return f
}

func status(enabled bool) provisioning.ProvisioningStatus {
	if enabled {
		return provisioning.StatusEnabled
	}
	return provisioning.StatusDisabled
}

func pemString(c *x509.Certificate) string { return string(pkitest.CertPEM(c)) }

// x509Group is a group whose primary signing certificate is c.
func x509Group(id string, c *x509.Certificate, enabled bool) *provisioning.EnrollmentGroup {
	return &provisioning.EnrollmentGroup{
		EnrollmentGroupID: id,
		Attestation: provisioning.AttestationMechanism{
			Type: provisioning.AttestationX509,
			X509: &provisioning.X509Attestation{SigningCertificates: &provisioning.X509Certificates{
				Primary: &provisioning.X509CertificateWithInfo{Certificate: pemString(c)},
			}},
		},
		EnrollmentPolicy: provisioning.EnrollmentPolicy{ProvisioningStatus: status(enabled)},
	}
}

// caRefGroup is a group that names an uploaded CA certificate.
func caRefGroup(id, caName string, enabled bool) *provisioning.EnrollmentGroup {
	return &provisioning.EnrollmentGroup{
		EnrollmentGroupID: id,
		Attestation: provisioning.AttestationMechanism{
			Type: provisioning.AttestationX509,
			X509: &provisioning.X509Attestation{CAReferences: &provisioning.X509CAReferences{Primary: caName}},
		},
		EnrollmentPolicy: provisioning.EnrollmentPolicy{ProvisioningStatus: status(enabled)},
	}
}

// x509Individual enrolls c as the primary client certificate of id.
func x509Individual(id string, c *x509.Certificate, enabled bool) *provisioning.IndividualEnrollment {
	return &provisioning.IndividualEnrollment{
		RegistrationID: id,
		Attestation: provisioning.AttestationMechanism{
			Type: provisioning.AttestationX509,
			X509: &provisioning.X509Attestation{ClientCertificates: &provisioning.X509Certificates{
				Primary: &provisioning.X509CertificateWithInfo{Certificate: pemString(c)},
			}},
		},
		EnrollmentPolicy: provisioning.EnrollmentPolicy{ProvisioningStatus: status(enabled)},
	}
}

// symmetricIndividual is an individual enrollment of another attestation
// type, as used to take one device out of a group.
func symmetricIndividual(id string, enabled bool) *provisioning.IndividualEnrollment {
	return &provisioning.IndividualEnrollment{
		RegistrationID: id,
		Attestation: provisioning.AttestationMechanism{
			Type:         provisioning.AttestationSymmetricKey,
			SymmetricKey: &provisioning.SymmetricKeyAttestation{PrimaryKey: "AAAA"},
		},
		EnrollmentPolicy: provisioning.EnrollmentPolicy{ProvisioningStatus: status(enabled)},
	}
}
