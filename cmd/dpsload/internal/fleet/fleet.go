// Package fleet prepares the simulated devices of a load run before any
// measurement starts: an issuing CA (fresh, or loaded from files), one
// certificate and key per device, and, when asked, an enrollment group for
// the CA created through the admin API.
package fleet

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"runtime"
	"sync"

	"github.com/dpsbroker/dpsbroker/clients/service"
	"github.com/dpsbroker/dpsbroker/cmd/dpsload/internal/load"
	"github.com/dpsbroker/dpsbroker/provisioning"
	"github.com/dpsbroker/dpsbroker/provisioning/pkitest"
)

// PKI is the device side of a run: the CA that issues device certificates
// and the anchor a verifier trusts.
type PKI struct {
	// Issuer signs device certificates; its Chain goes into every device's
	// TLS chain.
	Issuer *pkitest.CA
	// Anchor is what a group enrolls and what the baseline trusts: the
	// root above Issuer when known, else Issuer itself.
	Anchor *x509.Certificate
}

// NewPKI creates a root and an intermediate under it, both ECDSA P-256, so
// that each device presents leaf + intermediate and every verifier checks a
// three-level chain, as in perf-baselines.md.
func NewPKI(name string) (*PKI, error) {
	root, err := pkitest.NewRootCA(name + " root")
	if err != nil {
		return nil, fmt.Errorf("fleet: %w", err)
	}
	inter, err := root.NewIntermediate(name + " devices CA")
	if err != nil {
		return nil, fmt.Errorf("fleet: %w", err)
	}
	return &PKI{Issuer: inter, Anchor: root.Cert}, nil
}

// LoadPKI uses an existing CA: certPEM holds the CA certificate first, then
// those above it (the root, if included, becomes the anchor).
func LoadPKI(certPEM, keyPEM []byte) (*PKI, error) {
	ca, err := pkitest.LoadCA(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("fleet: %w", err)
	}
	anchor := ca.Root()
	if anchor == nil {
		anchor = ca.Cert
	}
	return &PKI{Issuer: ca, Anchor: anchor}, nil
}

// Mint issues n X.509 devices named prefix + a zero-padded index, on every
// core: key generation and signing are kept out of the measured window.
func (p *PKI) Mint(ctx context.Context, prefix string, n int) ([]*load.Device, error) {
	if n < 1 {
		return nil, errors.New("fleet: no devices to mint")
	}
	devs := make([]*load.Device, n)
	errs := make([]error, n)
	next := make(chan int)
	var wg sync.WaitGroup
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for i := range next {
				id := fmt.Sprintf("%s%06d", prefix, i)
				leaf, err := p.Issuer.NewLeaf(id)
				if err != nil {
					errs[i] = fmt.Errorf("fleet: device %s: %w", id, err)
					continue
				}
				cert := leaf.TLSCertificate()
				devs[i] = load.NewDevice(id, load.X509{Cert: &cert})
			}
		})
	}
	for i := range n {
		if ctx.Err() != nil {
			break
		}
		next <- i
	}
	close(next)
	wg.Wait()
	if err := errors.Join(append(errs, ctx.Err())...); err != nil {
		return nil, err
	}
	return devs, nil
}

// Enroll creates or replaces an enabled X.509 enrollment group groupID
// whose signing certificate is the anchor, through the admin API.
func (p *PKI) Enroll(ctx context.Context, admin *service.Client, groupID string) error {
	g := &provisioning.EnrollmentGroup{
		EnrollmentGroupID: groupID,
		Attestation: provisioning.AttestationMechanism{
			Type: provisioning.AttestationX509,
			X509: &provisioning.X509Attestation{SigningCertificates: &provisioning.X509Certificates{
				Primary: &provisioning.X509CertificateWithInfo{Certificate: string(pkitest.CertPEM(p.Anchor))},
			}},
		},
		EnrollmentPolicy: provisioning.EnrollmentPolicy{ProvisioningStatus: provisioning.StatusEnabled},
	}
	if _, err := admin.PutEnrollmentGroup(ctx, g, ""); err != nil {
		return fmt.Errorf("fleet: enroll group %q: %w", groupID, err)
	}
	return nil
}

// ServerIdentity makes a TLS server certificate (chain PEM) and key (PEM)
// for localhost under a fresh root, for a baseline broker; roots trusts it.
func ServerIdentity() (certPEM, keyPEM []byte, roots *x509.CertPool, err error) {
	root, err := pkitest.NewRootCA("dpsload baseline server root")
	if err != nil {
		return nil, nil, nil, fmt.Errorf("fleet: %w", err)
	}
	leaf, err := root.NewServerLeaf(nil)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("fleet: %w", err)
	}
	return leaf.ChainPEM(), leaf.KeyPEM(), root.Pool(), nil
}

// EnrollIndividually creates or replaces an enabled individual X.509
// enrollment for each device, holding its own leaf certificate, through
// the admin API's bulk endpoint (service.MaxBulkItems per request, a few
// requests in flight). Such devices are decided by their individual
// enrollment: the broker finds it by registration ID and compares the
// leaf's thumbprint, where a group device is found by walking its chain.
func EnrollIndividually(ctx context.Context, admin *service.Client, devices []*load.Device) error {
	const inFlight = 4
	batches := make(chan []*provisioning.IndividualEnrollment)
	errs := make([]error, inFlight)
	var wg sync.WaitGroup
	for w := range inFlight {
		wg.Go(func() {
			for es := range batches {
				if errs[w] != nil {
					continue // drain
				}
				res, err := admin.BulkEnrollments(ctx, service.BulkUpdate, es)
				switch {
				case err != nil:
					errs[w] = fmt.Errorf("fleet: bulk enroll %q...: %w", es[0].RegistrationID, err)
				case !res.IsSuccessful || len(res.Errors) > 0:
					errs[w] = fmt.Errorf("fleet: bulk enroll %q...: %d items failed, first: %+v", es[0].RegistrationID, len(res.Errors), res.Errors)
				}
			}
		})
	}
	var buildErr error
	batch := make([]*provisioning.IndividualEnrollment, 0, service.MaxBulkItems)
	flush := func() {
		if len(batch) > 0 {
			select {
			case batches <- batch:
			case <-ctx.Done():
			}
			batch = make([]*provisioning.IndividualEnrollment, 0, service.MaxBulkItems)
		}
	}
	for _, d := range devices {
		cert := d.Cred.ClientCertificate()
		if cert == nil || len(cert.Certificate) == 0 {
			buildErr = fmt.Errorf("fleet: device %s has no certificate to enroll", d.RegistrationID)
			break
		}
		batch = append(batch, IndividualEnrollment(d.RegistrationID, cert.Certificate[0]))
		if len(batch) == service.MaxBulkItems {
			flush()
		}
		if ctx.Err() != nil {
			break
		}
	}
	flush()
	close(batches)
	wg.Wait()
	return errors.Join(append(errs, buildErr, ctx.Err())...)
}

// IndividualEnrollment is an enabled X.509 individual enrollment whose
// primary client certificate is leafDER.
func IndividualEnrollment(registrationID string, leafDER []byte) *provisioning.IndividualEnrollment {
	return &provisioning.IndividualEnrollment{
		RegistrationID: registrationID,
		Attestation: provisioning.AttestationMechanism{
			Type: provisioning.AttestationX509,
			X509: &provisioning.X509Attestation{ClientCertificates: &provisioning.X509Certificates{
				Primary: &provisioning.X509CertificateWithInfo{Certificate: base64.StdEncoding.EncodeToString(leafDER)},
			}},
		},
		EnrollmentPolicy: provisioning.EnrollmentPolicy{ProvisioningStatus: provisioning.StatusEnabled},
	}
}
