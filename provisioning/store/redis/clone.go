package redisstore

import (
	"encoding/json"
	"slices"
	"time"

	"github.com/dpsbroker/dpsbroker/provisioning"
	"github.com/dpsbroker/dpsbroker/provisioning/wire"
)

// Deep copies of cached values, so that a caller modifying what Get
// returned cannot change what the next caller gets. They are written out
// by hand because a cache hit is the hot path; clone_test.go fills every
// field by reflection and fails if a new pointer, slice or map field is
// added to the model without being copied here.

func ptr[T any](p *T) *T {
	if p == nil {
		return nil
	}
	v := *p
	return &v
}

func cloneTime(t *time.Time) *time.Time { return ptr(t) }

func cloneRaw(r json.RawMessage) json.RawMessage {
	if r == nil {
		return nil
	}
	return slices.Clone(r)
}

func cloneCertInfo(i *wire.X509CertificateInfo) *wire.X509CertificateInfo { return ptr(i) }

func cloneCertWithInfo(c *provisioning.X509CertificateWithInfo) *provisioning.X509CertificateWithInfo {
	if c == nil {
		return nil
	}
	return &provisioning.X509CertificateWithInfo{Certificate: c.Certificate, Info: cloneCertInfo(c.Info)}
}

func cloneCerts(c *provisioning.X509Certificates) *provisioning.X509Certificates {
	if c == nil {
		return nil
	}
	return &provisioning.X509Certificates{Primary: cloneCertWithInfo(c.Primary), Secondary: cloneCertWithInfo(c.Secondary)}
}

func cloneAttestation(a provisioning.AttestationMechanism) provisioning.AttestationMechanism {
	out := provisioning.AttestationMechanism{
		Type:         a.Type,
		TPM:          ptr(a.TPM),
		SymmetricKey: ptr(a.SymmetricKey),
	}
	if a.X509 != nil {
		out.X509 = &provisioning.X509Attestation{
			ClientCertificates:  cloneCerts(a.X509.ClientCertificates),
			SigningCertificates: cloneCerts(a.X509.SigningCertificates),
			CAReferences:        ptr(a.X509.CAReferences),
		}
	}
	return out
}

func clonePolicy(p provisioning.EnrollmentPolicy) provisioning.EnrollmentPolicy {
	out := p
	out.Capabilities = ptr(p.Capabilities)
	out.IoTHubs = slices.Clone(p.IoTHubs)
	out.CustomAllocationDefinition = ptr(p.CustomAllocationDefinition)
	if p.InitialTwin != nil {
		out.InitialTwin = &provisioning.InitialTwin{Tags: cloneRaw(p.InitialTwin.Tags)}
		if p.InitialTwin.Properties != nil {
			out.InitialTwin.Properties = &provisioning.InitialTwinProperties{Desired: cloneRaw(p.InitialTwin.Properties.Desired)}
		}
	}
	if p.ReprovisionPolicy != nil {
		out.ReprovisionPolicy = &provisioning.ReprovisionPolicy{
			UpdateHubAssignment: ptr(p.ReprovisionPolicy.UpdateHubAssignment),
			MigrateDeviceData:   ptr(p.ReprovisionPolicy.MigrateDeviceData),
		}
	}
	return out
}

func cloneRegistration(r *provisioning.RegistrationState) *provisioning.RegistrationState {
	if r == nil {
		return nil
	}
	out := *r
	out.CreatedDateTimeUTC = cloneTime(r.CreatedDateTimeUTC)
	out.LastUpdatedDateTimeUTC = cloneTime(r.LastUpdatedDateTimeUTC)
	out.Payload = cloneRaw(r.Payload)
	out.CertificateInfo = cloneCertInfo(r.CertificateInfo)
	out.SigningCertInfo = cloneCertInfo(r.SigningCertInfo)
	return &out
}

func cloneEnrollment(e *provisioning.IndividualEnrollment) *provisioning.IndividualEnrollment {
	if e == nil {
		return nil
	}
	out := *e
	out.RegistrationState = cloneRegistration(e.RegistrationState)
	out.Attestation = cloneAttestation(e.Attestation)
	out.OptionalDeviceInformation = cloneRaw(e.OptionalDeviceInformation)
	out.EnrollmentPolicy = clonePolicy(e.EnrollmentPolicy)
	out.CreatedDateTimeUTC = cloneTime(e.CreatedDateTimeUTC)
	out.LastUpdatedDateTimeUTC = cloneTime(e.LastUpdatedDateTimeUTC)
	return &out
}

func cloneGroup(g *provisioning.EnrollmentGroup) *provisioning.EnrollmentGroup {
	if g == nil {
		return nil
	}
	out := *g
	out.Attestation = cloneAttestation(g.Attestation)
	out.EnrollmentPolicy = clonePolicy(g.EnrollmentPolicy)
	out.CreatedDateTimeUTC = cloneTime(g.CreatedDateTimeUTC)
	out.LastUpdatedDateTimeUTC = cloneTime(g.LastUpdatedDateTimeUTC)
	return &out
}

func cloneCA(c *provisioning.CACertificate) *provisioning.CACertificate {
	if c == nil {
		return nil
	}
	out := *c
	out.Expiry = cloneTime(c.Expiry)
	out.Created = cloneTime(c.Created)
	out.Updated = cloneTime(c.Updated)
	return &out
}
