package provisioning

import (
	"encoding/json"
	"time"

	"github.com/dpsbroker/dpsbroker/provisioning/wire"
)

// ProvisioningStatus says whether an enrollment entry admits devices.
type ProvisioningStatus string

// Provisioning statuses (DPS service API).
const (
	StatusEnabled  ProvisioningStatus = "enabled"
	StatusDisabled ProvisioningStatus = "disabled"
)

// AllocationPolicy selects how a device is assigned to a linked hub.
type AllocationPolicy string

// Allocation policies (DPS service API). GeoLatency and Custom are accepted
// in enrollments for compatibility; see Allocator for what each one does.
const (
	AllocationHashed     AllocationPolicy = "hashed"
	AllocationStatic     AllocationPolicy = "static"
	AllocationGeoLatency AllocationPolicy = "geoLatency"
	AllocationCustom     AllocationPolicy = "custom"
)

// AttestationType names the way a device proves its identity.
type AttestationType string

// Attestation types (DPS service API).
const (
	AttestationNone         AttestationType = "none"
	AttestationTPM          AttestationType = "tpm"
	AttestationX509         AttestationType = "x509"
	AttestationSymmetricKey AttestationType = "symmetricKey"
)

// AttestationMechanism is the DPS attestation object of an enrollment.
type AttestationMechanism struct {
	Type         AttestationType          `json:"type"`
	TPM          *TPMAttestation          `json:"tpm,omitempty"`
	X509         *X509Attestation         `json:"x509,omitempty"`
	SymmetricKey *SymmetricKeyAttestation `json:"symmetricKey,omitempty"`
}

// TPMAttestation carries the TPM public keys of an individual enrollment:
// base64 of the marshalled TPM2B_PUBLIC.
type TPMAttestation struct {
	EndorsementKey string `json:"endorsementKey"`
	StorageRootKey string `json:"storageRootKey,omitempty"`
}

// X509Attestation holds the certificates of an X.509 enrollment: client
// certificates for individual enrollments, signing certificates or CA
// references for groups.
type X509Attestation struct {
	ClientCertificates  *X509Certificates `json:"clientCertificates,omitempty"`
	SigningCertificates *X509Certificates `json:"signingCertificates,omitempty"`
	CAReferences        *X509CAReferences `json:"caReferences,omitempty"`
}

// X509Certificates is a primary and an optional secondary certificate.
type X509Certificates struct {
	Primary   *X509CertificateWithInfo `json:"primary,omitempty"`
	Secondary *X509CertificateWithInfo `json:"secondary,omitempty"`
}

// X509CertificateWithInfo is one certificate as PEM (or base64 DER) with the
// description the service fills in on read.
type X509CertificateWithInfo struct {
	Certificate string                    `json:"certificate,omitempty"`
	Info        *wire.X509CertificateInfo `json:"info,omitempty"`
}

// X509CAReferences names uploaded CA certificates (see CACertificate).
type X509CAReferences struct {
	Primary   string `json:"primary,omitempty"`
	Secondary string `json:"secondary,omitempty"`
}

// SymmetricKeyAttestation holds base64 keys of a symmetric-key enrollment.
type SymmetricKeyAttestation struct {
	PrimaryKey   string `json:"primaryKey,omitempty"`
	SecondaryKey string `json:"secondaryKey,omitempty"`
}

// DeviceCapabilities are the DPS device capabilities.
type DeviceCapabilities struct {
	IoTEdge bool `json:"iotEdge"`
}

// InitialTwin is the twin state a device gets on first assignment.
type InitialTwin struct {
	Tags       json.RawMessage        `json:"tags,omitempty"`
	Properties *InitialTwinProperties `json:"properties,omitempty"`
}

// InitialTwinProperties holds the desired properties of an InitialTwin.
type InitialTwinProperties struct {
	Desired json.RawMessage `json:"desired,omitempty"`
}

// ReprovisionPolicy says what happens when a registered device registers
// again. Nil fields mean true, as in DPS.
type ReprovisionPolicy struct {
	UpdateHubAssignment *bool `json:"updateHubAssignment,omitempty"`
	MigrateDeviceData   *bool `json:"migrateDeviceData,omitempty"`
}

// UpdatesHubAssignment reports whether re-registration may move the device
// to another hub (the DPS default is true).
func (p *ReprovisionPolicy) UpdatesHubAssignment() bool {
	return p == nil || p.UpdateHubAssignment == nil || *p.UpdateHubAssignment
}

// CustomAllocationDefinition names the webhook of the custom policy.
type CustomAllocationDefinition struct {
	WebhookURL string `json:"webhookUrl"`
	APIVersion string `json:"apiVersion"`
}

// EnrollmentPolicy is what individual enrollments and groups share: how
// devices are allocated and what they receive.
type EnrollmentPolicy struct {
	Capabilities               *DeviceCapabilities         `json:"capabilities,omitempty"`
	IoTHubHostName             string                      `json:"iotHubHostName,omitempty"`
	IoTHubs                    []string                    `json:"iotHubs,omitempty"`
	AllocationPolicy           AllocationPolicy            `json:"allocationPolicy,omitempty"`
	CustomAllocationDefinition *CustomAllocationDefinition `json:"customAllocationDefinition,omitempty"`
	InitialTwin                *InitialTwin                `json:"initialTwin,omitempty"`
	ReprovisionPolicy          *ReprovisionPolicy          `json:"reprovisionPolicy,omitempty"`
	ProvisioningStatus         ProvisioningStatus          `json:"provisioningStatus,omitempty"`
}

// Enabled reports whether the entry admits devices. An empty status means
// enabled, as in DPS.
func (p *EnrollmentPolicy) Enabled() bool {
	return p.ProvisioningStatus != StatusDisabled
}

// IndividualEnrollment admits one device (DPS IndividualEnrollment).
type IndividualEnrollment struct {
	RegistrationID            string               `json:"registrationId"`
	DeviceID                  string               `json:"deviceId,omitempty"`
	RegistrationState         *RegistrationState   `json:"registrationState,omitempty"`
	Attestation               AttestationMechanism `json:"attestation"`
	OptionalDeviceInformation json.RawMessage      `json:"optionalDeviceInformation,omitempty"`
	EnrollmentPolicy
	ETag                   string     `json:"etag,omitempty"`
	CreatedDateTimeUTC     *time.Time `json:"createdDateTimeUtc,omitempty"`
	LastUpdatedDateTimeUTC *time.Time `json:"lastUpdatedDateTimeUtc,omitempty"`
}

// EnrollmentGroup admits every device whose certificate chain contains the
// group's certificate (DPS EnrollmentGroup).
type EnrollmentGroup struct {
	EnrollmentGroupID string               `json:"enrollmentGroupId"`
	Attestation       AttestationMechanism `json:"attestation"`
	EnrollmentPolicy
	ETag                   string     `json:"etag,omitempty"`
	CreatedDateTimeUTC     *time.Time `json:"createdDateTimeUtc,omitempty"`
	LastUpdatedDateTimeUTC *time.Time `json:"lastUpdatedDateTimeUtc,omitempty"`
}

// CACertificate is an uploaded CA certificate that groups may reference by
// name (DPS "certificates" with proof of possession).
type CACertificate struct {
	Name             string     `json:"name"`
	Certificate      string     `json:"certificate"`
	IsVerified       bool       `json:"isVerified"`
	VerificationCode string     `json:"verificationCode,omitempty"`
	Subject          string     `json:"subject,omitempty"`
	Thumbprint       string     `json:"thumbprint,omitempty"`
	Expiry           *time.Time `json:"expiry,omitempty"`
	ETag             string     `json:"etag,omitempty"`
	Created          *time.Time `json:"created,omitempty"`
	Updated          *time.Time `json:"updated,omitempty"`
}

// RegistrationStatus is the state of a registration (DPS enumeration).
type RegistrationStatus string

// Registration statuses. Unassigned is never sent for an operation in
// progress: Node and Python treat it as an error.
const (
	RegistrationUnassigned RegistrationStatus = "unassigned"
	RegistrationAssigning  RegistrationStatus = "assigning"
	RegistrationAssigned   RegistrationStatus = "assigned"
	RegistrationFailed     RegistrationStatus = "failed"
	RegistrationDisabled   RegistrationStatus = "disabled"
)

// Substatus values of an assigned registration.
const (
	SubstatusInitialAssignment                = "initialAssignment"
	SubstatusDeviceDataMigrated               = "deviceDataMigrated"
	SubstatusDeviceDataReset                  = "deviceDataReset"
	SubstatusReprovisionedToInitialAssignment = "reprovisionedToInitialAssignment"
)

// RegistrationState is the registration record of one device: the DPS
// DeviceRegistrationState fields plus how the device attested.
type RegistrationState struct {
	RegistrationID         string             `json:"registrationId"`
	CreatedDateTimeUTC     *time.Time         `json:"createdDateTimeUtc,omitempty"`
	AssignedHub            string             `json:"assignedHub,omitempty"`
	DeviceID               string             `json:"deviceId,omitempty"`
	Status                 RegistrationStatus `json:"status"`
	Substatus              string             `json:"substatus,omitempty"`
	ErrorCode              int                `json:"errorCode,omitempty"`
	ErrorMessage           string             `json:"errorMessage,omitempty"`
	LastUpdatedDateTimeUTC *time.Time         `json:"lastUpdatedDateTimeUtc,omitempty"`
	ETag                   string             `json:"etag,omitempty"`
	Payload                json.RawMessage    `json:"payload,omitempty"`

	// Beyond the DPS service shape: which entry admitted the device and with
	// which certificate, so operators can answer "why is this device here".
	AttestationType   AttestationType           `json:"attestationType,omitempty"`
	EnrollmentGroupID string                    `json:"enrollmentGroupId,omitempty"`
	CertificateInfo   *wire.X509CertificateInfo `json:"certificateInfo,omitempty"`
	SigningCertInfo   *wire.X509CertificateInfo `json:"signingCertificateInfo,omitempty"`
}

// Operation is one in-flight or finished registration request, as polled by
// the device with iotdps-get-operationstatus.
type Operation struct {
	OperationID    string             `json:"operationId"`
	RegistrationID string             `json:"registrationId"`
	Status         RegistrationStatus `json:"status"`
	// Result is the registration state once Status is final.
	Result  *RegistrationState `json:"result,omitempty"`
	Created time.Time          `json:"created"`
	Expires time.Time          `json:"expires"`
}

// EventType classifies an entry of the provisioning event log.
type EventType string

// Event types.
const (
	EventAssigned EventType = "assigned"
	EventRefused  EventType = "refused"
	EventFailed   EventType = "failed"
)

// Event is one provisioning result or refusal, published to back-end
// subscribers and appended to the store's event log.
type Event struct {
	// ID is assigned by the event log on append (a Redis stream ID or a
	// sequence number); it orders events.
	ID                string          `json:"id,omitempty"`
	Type              EventType       `json:"type"`
	Time              time.Time       `json:"time"`
	RegistrationID    string          `json:"registrationId"`
	DeviceID          string          `json:"deviceId,omitempty"`
	AttestationType   AttestationType `json:"attestationType,omitempty"`
	EnrollmentGroupID string          `json:"enrollmentGroupId,omitempty"`
	AssignedHub       string          `json:"assignedHub,omitempty"`
	OperationID       string          `json:"operationId,omitempty"`
	ErrorCode         int             `json:"errorCode,omitempty"`
	Reason            string          `json:"reason,omitempty"`
	Explanation       string          `json:"explanation,omitempty"`
	Node              string          `json:"node,omitempty"`
}
