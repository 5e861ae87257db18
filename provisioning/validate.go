package provisioning

import (
	"bytes"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"reflect"
	"strings"
	"time"

	"github.com/dpsbroker/dpsbroker/provisioning/wire"
)

// Limits and formats of the enrollment model beyond the registration ID
// rules of ids.go.
const (
	// MaxDeviceIDLen is the IoT Hub limit on device IDs.
	MaxDeviceIDLen = 128
	// MaxEnrollmentGroupIDLen is the DPS limit on enrollment group IDs.
	MaxEnrollmentGroupIDLen = 128
	// MaxCACertificateNameLen bounds CA certificate names.
	MaxCACertificateNameLen = 64
	// MinSymmetricKeyLen and MaxSymmetricKeyLen bound a decoded symmetric
	// key, as DPS does.
	MinSymmetricKeyLen = 16
	MaxSymmetricKeyLen = 64
	// GeneratedSymmetricKeyLen is the size of keys the service generates
	// when an enrollment names none (DPS generates 64-byte keys).
	GeneratedSymmetricKeyLen = 64
	// MaxTPMKeyLen bounds a decoded TPM2B_PUBLIC; an RSA-4096 EK is about
	// 600 bytes.
	MaxTPMKeyLen = 2048
	// MinCustomAllocationAPIVersion is the oldest webhook api-version DPS
	// accepts.
	MinCustomAllocationAPIVersion = "2018-09-01-preview"
)

// ValidateDeviceID checks an IoT Hub device ID: 1 to 128 ASCII letters,
// digits and - . % _ * ? ! ( ) , : = @ $ '.
//
// This is the set of the IoT Hub identity registry documentation. Newer
// Azure pages also list + # and ;. We refuse those: + and # are MQTT
// wildcards and hubs put device IDs into topic names, so accepting them
// would make IDs that some hubs and brokers cannot address.
func ValidateDeviceID(id string) error {
	switch {
	case id == "":
		return fmt.Errorf("device ID is empty")
	case len(id) > MaxDeviceIDLen:
		return fmt.Errorf("device ID is %d characters long, the limit is %d", len(id), MaxDeviceIDLen)
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; !isAlnum(c) && !strings.ContainsRune("-.%_*?!(),:=@$'", rune(c)) {
			return fmt.Errorf("device ID has character %q at position %d (allowed: letters, digits and - . %% _ * ? ! ( ) , : = @ $ ')", c, i)
		}
	}
	return nil
}

// ValidateEnrollmentGroupID checks a group ID: the registration ID charset
// and shape, at most 128 characters.
func ValidateEnrollmentGroupID(id string) error {
	return checkID("enrollment group ID", id, MaxEnrollmentGroupIDLen)
}

// ValidateCACertificateName checks the name groups use to reference an
// uploaded CA certificate: 1 to 64 ASCII letters, digits and - . _,
// starting and ending with a letter or digit.
func ValidateCACertificateName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("CA certificate name is empty")
	case len(name) > MaxCACertificateNameLen:
		return fmt.Errorf("CA certificate name is %d characters long, the limit is %d", len(name), MaxCACertificateNameLen)
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; !isAlnum(c) && c != '-' && c != '.' && c != '_' {
			return fmt.Errorf("CA certificate name has character %q at position %d (allowed: letters, digits, '-', '.', '_')", c, i)
		}
	}
	if !isAlnum(name[0]) || !isAlnum(name[len(name)-1]) {
		return fmt.Errorf("CA certificate name must start and end with a letter or digit")
	}
	return nil
}

// checkID applies the registration ID rules with a kind-specific message.
func checkID(kind, id string, max int) error {
	switch {
	case id == "":
		return fmt.Errorf("%s is empty", kind)
	case len(id) > max:
		return fmt.Errorf("%s is %d characters long, the limit is %d", kind, len(id), max)
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; !isAlnum(c) && c != '-' && c != '.' && c != '_' && c != ':' {
			return fmt.Errorf("%s has character %q at position %d (allowed: letters, digits, '-', '.', '_', ':')", kind, c, i)
		}
	}
	if !isAlnum(id[0]) {
		return fmt.Errorf("%s must start with a letter or digit", kind)
	}
	if last := id[len(id)-1]; !isAlnum(last) && last != '-' {
		return fmt.Errorf("%s must end with a letter, digit or -", kind)
	}
	return nil
}

// DecodeSymmetricKey decodes a symmetric enrollment key (standard base64,
// 16 to 64 bytes). SAS verification must use the same decoding as
// validation, so both go through here.
func DecodeSymmetricKey(s string) ([]byte, error) {
	k, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("key is not valid base64")
	}
	if len(k) < MinSymmetricKeyLen || len(k) > MaxSymmetricKeyLen {
		return nil, fmt.Errorf("key is %d bytes long; it must be %d to %d bytes", len(k), MinSymmetricKeyLen, MaxSymmetricKeyLen)
	}
	return k, nil
}

// GenerateMissingKeys fills empty symmetric keys of a symmetricKey
// attestation with fresh random keys, as DPS does when an enrollment is
// created without keys. r is crypto/rand.Reader when nil. Call it before
// Validate on create; other attestation types are left alone.
func (a *AttestationMechanism) GenerateMissingKeys(r io.Reader) error {
	if a.Type != AttestationSymmetricKey {
		return nil
	}
	if r == nil {
		r = rand.Reader
	}
	if a.SymmetricKey == nil {
		a.SymmetricKey = &SymmetricKeyAttestation{}
	}
	for _, k := range []*string{&a.SymmetricKey.PrimaryKey, &a.SymmetricKey.SecondaryKey} {
		if *k != "" {
			continue
		}
		b := make([]byte, GeneratedSymmetricKeyLen)
		if _, err := io.ReadFull(r, b); err != nil {
			return fmt.Errorf("generate symmetric key: %w", err)
		}
		*k = base64.StdEncoding.EncodeToString(b)
	}
	return nil
}

// Validate checks every field of an individual enrollment and reports all
// problems at once as a *ValidationError. Read-only fields (registrationState,
// etag, timestamps, certificate info) are not checked: the service ignores
// them on write.
//
// An attestation of type none is accepted only on a disabled enrollment:
// such an entry can never admit a device, and it is the natural way to block
// one registration ID. Enabled, it would admit anyone who knows the ID.
func (e *IndividualEnrollment) Validate() error {
	v := &ValidationError{}
	max := MaxRegistrationIDLen
	if e.Attestation.Type == AttestationX509 {
		max = MaxX509RegistrationIDLen
	}
	if err := ValidateRegistrationID(e.RegistrationID, max); err != nil {
		if e.Attestation.Type == AttestationX509 && len(e.RegistrationID) > max {
			v.add("registrationId", "%v (X.509 registration IDs are the certificate CN)", err)
		} else {
			v.add("registrationId", "%v", err)
		}
	}
	if e.DeviceID != "" {
		if err := ValidateDeviceID(e.DeviceID); err != nil {
			v.add("deviceId", "%v", err)
		}
	}
	a := &e.Attestation
	switch a.Type {
	case AttestationX509:
		v.onlySubObject(a)
		validateIndividualX509(v, a.X509, e.RegistrationID)
	case AttestationSymmetricKey:
		v.onlySubObject(a)
		validateSymmetricKeys(v, a.SymmetricKey)
	case AttestationTPM:
		v.onlySubObject(a)
		validateTPM(v, a.TPM)
	case AttestationNone:
		v.onlySubObject(a)
		if e.Enabled() {
			v.add("attestation.type", "none is only allowed on a disabled enrollment (it would admit any device with this registration ID)")
		}
	case "":
		v.add("attestation.type", "is required (x509, symmetricKey or tpm)")
	default:
		v.add("attestation.type", "unknown attestation type %q; allowed are x509, symmetricKey, tpm and none", a.Type)
	}
	if len(e.OptionalDeviceInformation) > 0 {
		if msg := jsonObjectProblem(e.OptionalDeviceInformation); msg != "" {
			v.add("optionalDeviceInformation", "%s", msg)
		}
	}
	validatePolicy(v, &e.EnrollmentPolicy)
	return v.err()
}

// groupAttestationValidators says which attestation types a group may use.
var groupAttestationValidators = map[AttestationType]func(v *ValidationError, a *AttestationMechanism){
	AttestationX509: func(v *ValidationError, a *AttestationMechanism) { v.onlySubObject(a); validateGroupX509(v, a.X509) },
	AttestationSymmetricKey: func(v *ValidationError, a *AttestationMechanism) {
		v.onlySubObject(a)
		validateSymmetricKeys(v, a.SymmetricKey)
	},
	AttestationTPM: validateTPMGroup,
}

// validateTPMGroup checks a TPM enrollment group, dpsbroker's extension:
// Azure has no TPM groups. Such a group is keyed by the manufacturer CA that
// issues the devices' EK certificates, named exactly as an X.509 group
// names its CA, in the x509 sub-object:
//
//	{"enrollmentGroupId": "contoso-tpms",
//	 "attestation": {"type": "tpm",
//	   "x509": {"signingCertificates": {"primary": {"certificate": "-----BEGIN CERTIFICATE-----..."}}}}}
//
// or "x509": {"caReferences": {"primary": "<uploaded CA name>"}}. The tpm
// sub-object (an EK) belongs to individual enrollments and must be absent.
// A device is admitted when its EK certificate chains to that CA.
func validateTPMGroup(v *ValidationError, a *AttestationMechanism) {
	if a.TPM != nil {
		v.add("attestation.tpm", "must be absent in a group: a TPM group names its manufacturer CA in attestation.x509 (signingCertificates or caReferences)")
	}
	if a.SymmetricKey != nil {
		v.add("attestation.symmetricKey", "must be absent when attestation.type is tpm")
	}
	if a.X509 == nil {
		v.add("attestation.x509", "is required in a TPM group: the manufacturer CA of the devices' EK certificates (signingCertificates or caReferences)")
		return
	}
	validateGroupX509(v, a.X509)
}

// Validate checks every field of an enrollment group and reports all
// problems at once as a *ValidationError.
func (g *EnrollmentGroup) Validate() error {
	v := &ValidationError{}
	if err := ValidateEnrollmentGroupID(g.EnrollmentGroupID); err != nil {
		v.add("enrollmentGroupId", "%v", err)
	}
	a := &g.Attestation
	switch check, ok := groupAttestationValidators[a.Type]; {
	case ok:
		check(v, a)
	case a.Type == "":
		v.add("attestation.type", "is required (x509, symmetricKey or tpm)")
	case a.Type == AttestationNone:
		v.add("attestation.type", "%s is not supported for enrollment groups; use x509, symmetricKey or tpm", a.Type)
	default:
		v.add("attestation.type", "unknown attestation type %q; allowed for groups are x509, symmetricKey and tpm", a.Type)
	}
	validatePolicy(v, &g.EnrollmentPolicy)
	return v.err()
}

// Validate checks an uploaded CA certificate: its name, and that the
// certificate parses and is a CA that may sign certificates.
func (c *CACertificate) Validate() error {
	v := &ValidationError{}
	if err := ValidateCACertificateName(c.Name); err != nil {
		v.add("name", "%v", err)
	}
	if c.Certificate == "" {
		v.add("certificate", "is required")
	} else if cert, err := ParseCertificate(c.Certificate); err != nil {
		v.add("certificate", "%v", err)
	} else if msg := notCAProblem(cert); msg != "" {
		v.add("certificate", "%s", msg)
	}
	return v.err()
}

// Validate checks a registration record: a valid registration ID, a known
// status, and an error code that agrees with the status (set exactly on
// failed records, optional on disabled ones, absent otherwise).
func (r *RegistrationState) Validate() error {
	v := &ValidationError{}
	if err := ValidateRegistrationID(r.RegistrationID, MaxRegistrationIDLen); err != nil {
		v.add("registrationId", "%v", err)
	}
	if r.DeviceID != "" {
		if err := ValidateDeviceID(r.DeviceID); err != nil {
			v.add("deviceId", "%v", err)
		}
	}
	if r.AssignedHub != "" {
		if err := ValidateHostName(r.AssignedHub); err != nil {
			v.add("assignedHub", "%v", err)
		}
	}
	if r.ErrorCode != 0 && !validErrorCode(r.ErrorCode) {
		v.add("errorCode", "%d is not a DPS error code (HTTP status x 1000 + suffix, 400000 to 599999)", r.ErrorCode)
	}
	switch r.Status {
	case RegistrationAssigned:
		if r.AssignedHub == "" {
			v.add("assignedHub", "is required when status is assigned")
		}
		if r.DeviceID == "" {
			v.add("deviceId", "is required when status is assigned")
		}
		if r.ErrorCode != 0 {
			v.add("errorCode", "must be absent when status is assigned")
		}
		switch r.Substatus {
		case "", SubstatusInitialAssignment, SubstatusDeviceDataMigrated, SubstatusDeviceDataReset, SubstatusReprovisionedToInitialAssignment:
		default:
			v.add("substatus", "unknown substatus %q", r.Substatus)
		}
	case RegistrationFailed:
		if r.ErrorCode == 0 {
			v.add("errorCode", "is required when status is failed")
		}
	case RegistrationAssigning, RegistrationUnassigned:
		if r.ErrorCode != 0 {
			v.add("errorCode", "must be absent when status is %s", r.Status)
		}
	case RegistrationDisabled:
	case "":
		v.add("status", "is required")
	default:
		v.add("status", "unknown status %q; allowed are unassigned, assigning, assigned, failed and disabled", r.Status)
	}
	if r.Status != RegistrationAssigned && r.Substatus != "" {
		v.add("substatus", "is only set when status is assigned")
	}
	if r.ErrorCode == 0 && r.ErrorMessage != "" {
		v.add("errorMessage", "is set without an errorCode")
	}
	switch r.AttestationType {
	case "", AttestationX509, AttestationSymmetricKey, AttestationTPM:
	default:
		v.add("attestationType", "unknown attestation type %q", r.AttestationType)
	}
	if r.EnrollmentGroupID != "" {
		if err := ValidateEnrollmentGroupID(r.EnrollmentGroupID); err != nil {
			v.add("enrollmentGroupId", "%v", err)
		}
	}
	if len(r.Payload) > 0 && !json.Valid(r.Payload) {
		v.add("payload", "is not valid JSON")
	}
	return v.err()
}

// MaxOperationIDLen bounds operation IDs, which devices echo back.
const MaxOperationIDLen = 256

// Validate checks an operation before it is stored: a non-empty printable
// operation ID, a valid registration ID, a status other than unassigned
// (Node and Python treat unassigned as an error), a result exactly when the
// status is final, and an expiry after the creation time.
func (o *Operation) Validate() error {
	v := &ValidationError{}
	switch {
	case o.OperationID == "":
		v.add("operationId", "is required")
	case len(o.OperationID) > MaxOperationIDLen:
		v.add("operationId", "is %d characters long, the limit is %d", len(o.OperationID), MaxOperationIDLen)
	default:
		for i := 0; i < len(o.OperationID); i++ {
			if c := o.OperationID[i]; c <= ' ' || c > '~' || c == '"' || c == '\\' {
				v.add("operationId", "has character %q at position %d; only printable ASCII without space, quote or backslash is allowed", c, i)
				break
			}
		}
	}
	if err := ValidateRegistrationID(o.RegistrationID, MaxRegistrationIDLen); err != nil {
		v.add("registrationId", "%v", err)
	}
	final := false
	switch o.Status {
	case RegistrationAssigning:
	case RegistrationAssigned, RegistrationFailed, RegistrationDisabled:
		final = true
	case RegistrationUnassigned:
		v.add("status", "unassigned is never used for an operation (device SDKs treat it as an error); use assigning")
	case "":
		v.add("status", "is required")
	default:
		v.add("status", "unknown status %q", o.Status)
	}
	switch {
	case final && o.Result == nil:
		v.add("result", "is required when status is %s", o.Status)
	case !final && o.Result != nil && o.Status == RegistrationAssigning:
		v.add("result", "must be absent while status is assigning")
	case o.Result != nil:
		if o.Result.Status != o.Status {
			v.add("result.status", "is %q but the operation status is %q", o.Result.Status, o.Status)
		}
		if !strings.EqualFold(o.Result.RegistrationID, o.RegistrationID) {
			v.add("result.registrationId", "is %q but the operation is for %q", o.Result.RegistrationID, o.RegistrationID)
		}
		var rv *ValidationError
		if errors.As(o.Result.Validate(), &rv) {
			for _, p := range rv.Problems {
				v.add("result."+p.Field, "%s", p.Message)
			}
		}
	}
	if o.Created.IsZero() {
		v.add("created", "is required")
	}
	if !o.Expires.After(o.Created) {
		v.add("expires", "must be after created")
	}
	return v.err()
}

func validErrorCode(c int) bool { return c >= 400000 && c <= 599999 }

// onlySubObject checks that the attestation carries the sub-object of its
// type and none of the others.
func (v *ValidationError) onlySubObject(a *AttestationMechanism) {
	present := map[AttestationType]bool{
		AttestationTPM:          a.TPM != nil,
		AttestationX509:         a.X509 != nil,
		AttestationSymmetricKey: a.SymmetricKey != nil,
	}
	for _, t := range []AttestationType{AttestationTPM, AttestationX509, AttestationSymmetricKey} {
		switch {
		case t == a.Type && !present[t]:
			v.add("attestation."+string(t), "is required when attestation.type is %s", a.Type)
		case t != a.Type && present[t]:
			v.add("attestation."+string(t), "must be absent when attestation.type is %s", a.Type)
		}
	}
}

func validateIndividualX509(v *ValidationError, x *X509Attestation, registrationID string) {
	if x == nil {
		return // reported by onlySubObject
	}
	const base = "attestation.x509"
	if x.SigningCertificates != nil {
		v.add(base+".signingCertificates", "is for enrollment groups; an individual enrollment uses clientCertificates")
	}
	if x.CAReferences != nil {
		v.add(base+".caReferences", "is for enrollment groups; an individual enrollment uses clientCertificates")
	}
	if x.ClientCertificates == nil {
		v.add(base+".clientCertificates", "is required")
		return
	}
	validateCertificates(v, base+".clientCertificates", x.ClientCertificates, func(field string, c *x509.Certificate) {
		if c.IsCA {
			v.add(field, "is a CA certificate (basic constraints CA:TRUE); a device certificate must be an end entity")
		}
		if !strings.EqualFold(c.Subject.CommonName, registrationID) {
			v.add(field, "subject CN %q does not match registrationId %q", c.Subject.CommonName, registrationID)
		}
	})
}

func validateGroupX509(v *ValidationError, x *X509Attestation) {
	if x == nil {
		return // reported by onlySubObject
	}
	const base = "attestation.x509"
	if x.ClientCertificates != nil {
		v.add(base+".clientCertificates", "is for individual enrollments; a group uses signingCertificates or caReferences")
	}
	switch {
	case x.SigningCertificates != nil && x.CAReferences != nil:
		v.add(base, "set exactly one of signingCertificates and caReferences, not both")
	case x.SigningCertificates != nil:
		validateCertificates(v, base+".signingCertificates", x.SigningCertificates, func(field string, c *x509.Certificate) {
			if msg := notCAProblem(c); msg != "" {
				v.add(field, "%s", msg)
			}
		})
	case x.CAReferences != nil:
		r := x.CAReferences
		if r.Primary == "" {
			v.add(base+".caReferences.primary", "is required")
		} else if err := ValidateCACertificateName(r.Primary); err != nil {
			v.add(base+".caReferences.primary", "%v", err)
		}
		if r.Secondary != "" {
			if err := ValidateCACertificateName(r.Secondary); err != nil {
				v.add(base+".caReferences.secondary", "%v", err)
			}
		}
	default:
		v.add(base, "one of signingCertificates and caReferences is required")
	}
}

// notCAProblem explains why c cannot sign device certificates, or returns "".
func notCAProblem(c *x509.Certificate) string {
	if !c.BasicConstraintsValid || !c.IsCA {
		return "is not a CA certificate (basic constraints CA:TRUE is required to sign device certificates)"
	}
	if c.KeyUsage != 0 && c.KeyUsage&x509.KeyUsageCertSign == 0 {
		return "key usage does not include keyCertSign, so it cannot sign device certificates"
	}
	return ""
}

// validateCertificates checks primary (required) and secondary (optional),
// then hands each parsed certificate to check with its field path.
func validateCertificates(v *ValidationError, base string, x *X509Certificates, check func(field string, c *x509.Certificate)) {
	if x.Primary == nil {
		v.add(base+".primary", "is required")
	}
	for _, e := range []struct {
		name string
		c    *X509CertificateWithInfo
	}{{"primary", x.Primary}, {"secondary", x.Secondary}} {
		if e.c == nil {
			continue
		}
		field := base + "." + e.name + ".certificate"
		if e.c.Certificate == "" {
			v.add(field, "is required")
			continue
		}
		cert, err := ParseCertificate(e.c.Certificate)
		if err != nil {
			v.add(field, "%v", err)
			continue
		}
		check(field, cert)
	}
}

func validateSymmetricKeys(v *ValidationError, s *SymmetricKeyAttestation) {
	if s == nil {
		return // reported by onlySubObject
	}
	if s.PrimaryKey == "" {
		v.add("attestation.symmetricKey.primaryKey", "is required")
	} else if _, err := DecodeSymmetricKey(s.PrimaryKey); err != nil {
		v.add("attestation.symmetricKey.primaryKey", "%v", err)
	}
	if s.SecondaryKey != "" {
		if _, err := DecodeSymmetricKey(s.SecondaryKey); err != nil {
			v.add("attestation.symmetricKey.secondaryKey", "%v", err)
		}
	}
}

// validateTPM checks only the encoding; the TPM structure itself is checked
// by provisioning/tpmattest.
func validateTPM(v *ValidationError, t *TPMAttestation) {
	if t == nil {
		return // reported by onlySubObject
	}
	check := func(field, s string) {
		b, err := base64.StdEncoding.DecodeString(s)
		switch {
		case err != nil:
			v.add(field, "is not valid base64")
		case len(b) == 0:
			v.add(field, "is empty")
		case len(b) > MaxTPMKeyLen:
			v.add(field, "is %d bytes long, the limit is %d", len(b), MaxTPMKeyLen)
		}
	}
	if t.EndorsementKey == "" {
		v.add("attestation.tpm.endorsementKey", "is required")
	} else {
		check("attestation.tpm.endorsementKey", t.EndorsementKey)
	}
	if t.StorageRootKey != "" {
		check("attestation.tpm.storageRootKey", t.StorageRootKey)
	}
}

func validatePolicy(v *ValidationError, p *EnrollmentPolicy) {
	switch p.ProvisioningStatus {
	case "", StatusEnabled, StatusDisabled:
	default:
		v.add("provisioningStatus", "unknown status %q; allowed are enabled and disabled", p.ProvisioningStatus)
	}

	hostOK := true
	if p.IoTHubHostName != "" {
		if err := ValidateHostName(p.IoTHubHostName); err != nil {
			v.add("iotHubHostName", "%v", err)
			hostOK = false
		}
	}
	for i, h := range p.IoTHubs {
		field := fmt.Sprintf("iotHubs[%d]", i)
		if err := ValidateHostName(h); err != nil {
			v.add(field, "%v", err)
			continue
		}
		for j := 0; j < i; j++ {
			if strings.EqualFold(p.IoTHubs[j], h) {
				v.add(field, "duplicates iotHubs[%d] %q", j, p.IoTHubs[j])
				break
			}
		}
	}
	if hostOK && p.IoTHubHostName != "" && len(p.IoTHubs) > 0 && !containsFold(p.IoTHubs, p.IoTHubHostName) {
		v.add("iotHubHostName", "%q is not among iotHubs; set iotHubs only (iotHubHostName is the legacy single-hub field)", p.IoTHubHostName)
	}

	switch p.AllocationPolicy {
	case "", AllocationHashed, AllocationGeoLatency:
	case AllocationStatic:
		switch n := len(p.IoTHubs); {
		case n > 1:
			v.add("iotHubs", "static allocation needs exactly one hub, got %d", n)
		case n == 0 && p.IoTHubHostName == "":
			v.add("iotHubs", "static allocation needs exactly one hub (iotHubs with one entry, or iotHubHostName)")
		}
	case AllocationCustom:
		if p.CustomAllocationDefinition == nil {
			v.add("customAllocationDefinition", "is required when allocationPolicy is custom")
		}
	default:
		v.add("allocationPolicy", "unknown policy %q; allowed are hashed, geoLatency, static and custom", p.AllocationPolicy)
	}
	if d := p.CustomAllocationDefinition; d != nil {
		validateWebhook(v, d)
	}

	if t := p.InitialTwin; t != nil {
		if len(t.Tags) > 0 {
			if msg := jsonObjectProblem(t.Tags); msg != "" {
				v.add("initialTwin.tags", "%s", msg)
			}
		}
		if t.Properties != nil && len(t.Properties.Desired) > 0 {
			if msg := jsonObjectProblem(t.Properties.Desired); msg != "" {
				v.add("initialTwin.properties.desired", "%s", msg)
			}
		}
	}
}

func validateWebhook(v *ValidationError, d *CustomAllocationDefinition) {
	const base = "customAllocationDefinition"
	if d.WebhookURL == "" {
		v.add(base+".webhookUrl", "is required")
	} else if u, err := url.Parse(d.WebhookURL); err != nil {
		v.add(base+".webhookUrl", "is not a valid URL")
	} else if u.Scheme != "https" || u.Host == "" || u.Hostname() == "" {
		v.add(base+".webhookUrl", "must be an absolute https URL")
	} else if u.User != nil {
		// Credentials in the URL would be echoed on every read.
		v.add(base+".webhookUrl", "must not contain user information; put the key in the query (code=...) as Azure Functions do")
	}
	switch {
	case d.APIVersion == "":
		v.add(base+".apiVersion", "is required")
	case !validAPIVersion(d.APIVersion):
		v.add(base+".apiVersion", "%q is not an api-version (YYYY-MM-DD or YYYY-MM-DD-preview)", d.APIVersion)
	case d.APIVersion[:10] < MinCustomAllocationAPIVersion[:10]:
		v.add(base+".apiVersion", "%q is older than the oldest supported %s", d.APIVersion, MinCustomAllocationAPIVersion)
	}
}

// validAPIVersion accepts YYYY-MM-DD with an optional -preview suffix.
func validAPIVersion(s string) bool {
	if len(s) < 10 {
		return false
	}
	if rest := s[10:]; rest != "" && rest != "-preview" {
		return false
	}
	for i := 0; i < 10; i++ {
		c := s[i]
		if i == 4 || i == 7 {
			if c != '-' {
				return false
			}
		} else if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// jsonObjectProblem returns why raw is not a JSON object, or "" if it is.
// JSON null counts as absent.
func jsonObjectProblem(raw json.RawMessage) string {
	t := bytes.TrimSpace(raw)
	switch {
	case bytes.Equal(t, []byte("null")):
		return ""
	case !json.Valid(t):
		return "is not valid JSON"
	case len(t) == 0 || t[0] != '{':
		return "must be a JSON object"
	}
	return ""
}

func containsFold(list []string, s string) bool {
	for _, x := range list {
		if strings.EqualFold(x, s) {
			return true
		}
	}
	return false
}

// MaxRequestBytes caps a JSON document accepted by the Decode functions.
// The largest legitimate enrollment (two RSA-4096 certificates and a twin)
// is far below it.
const MaxRequestBytes = 256 << 10

// maxJSONDepth caps nesting. IoT Hub twins allow 10 levels under tags and
// desired, which sit 3 levels deep in an enrollment.
const maxJSONDepth = 32

// DecodeEnrollment reads one individual enrollment as JSON. Unknown fields,
// duplicate keys, wrong JSON types, malformed JSON and bodies over
// MaxRequestBytes all give a *ValidationError naming the field (or the
// offset). The read-only registrationState and certificate info are
// dropped, as DPS ignores them on write; etag is kept for bulk
// updateIfMatchETag. Call Validate afterwards for the semantic checks.
// Other errors come from reading r.
func DecodeEnrollment(r io.Reader) (*IndividualEnrollment, error) {
	var e IndividualEnrollment
	if err := decodeStrict(r, &e); err != nil {
		return nil, err
	}
	e.RegistrationState = nil
	clearInfo(e.Attestation.X509)
	return &e, nil
}

// DecodeEnrollmentGroup reads one enrollment group as JSON, with the rules
// of DecodeEnrollment.
func DecodeEnrollmentGroup(r io.Reader) (*EnrollmentGroup, error) {
	var g EnrollmentGroup
	if err := decodeStrict(r, &g); err != nil {
		return nil, err
	}
	clearInfo(g.Attestation.X509)
	return &g, nil
}

// DecodeCACertificate reads one CA certificate as JSON, with the rules of
// DecodeEnrollment. The read-only fields (isVerified, verificationCode,
// subject, thumbprint, expiry) are kept as sent; the service decides
// which of them to honour.
func DecodeCACertificate(r io.Reader) (*CACertificate, error) {
	var c CACertificate
	if err := decodeStrict(r, &c); err != nil {
		return nil, err
	}
	return &c, nil
}

func clearInfo(x *X509Attestation) {
	if x == nil {
		return
	}
	for _, cs := range []*X509Certificates{x.ClientCertificates, x.SigningCertificates} {
		if cs == nil {
			continue
		}
		for _, c := range []*X509CertificateWithInfo{cs.Primary, cs.Secondary} {
			if c != nil {
				c.Info = nil
			}
		}
	}
}

// decodeStrict checks the document's shape against dst's type with a token
// walk (which, unlike json.Decoder.DisallowUnknownFields, reports every
// unknown field with its path, and catches duplicate keys and
// case-insensitive near-misses that encoding/json would silently accept),
// then unmarshals it.
func decodeStrict(r io.Reader, dst any) error {
	body, err := io.ReadAll(io.LimitReader(r, MaxRequestBytes+1))
	if err != nil {
		return fmt.Errorf("read request body: %w", err)
	}
	v := &ValidationError{}
	if len(body) > MaxRequestBytes {
		v.add("", "request body is larger than %d bytes", MaxRequestBytes)
		return v
	}
	if len(bytes.TrimSpace(body)) == 0 {
		v.add("", "request body is empty")
		return v
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	w := &shapeWalker{dec: dec, v: v}
	if err := w.value(reflect.TypeOf(dst).Elem(), "", 0, false); err != nil {
		var se *json.SyntaxError
		switch {
		case errors.As(err, &se):
			v.add("", "malformed JSON at offset %d: %s", se.Offset, strings.TrimPrefix(se.Error(), "json: "))
		case errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF):
			v.add("", "malformed JSON: unexpected end at offset %d", len(body))
		case errors.Is(err, errTooDeep):
			v.add("", "JSON nesting deeper than %d levels at offset %d", maxJSONDepth, dec.InputOffset())
		case errors.Is(err, errNotObject):
			v.add("", "request body must be a JSON object")
		default:
			v.add("", "malformed JSON at offset %d: %v", dec.InputOffset(), err)
		}
		return v
	}
	if _, err := dec.Token(); err != io.EOF {
		v.add("", "unexpected data after the JSON object at offset %d", dec.InputOffset())
	}
	if err := v.err(); err != nil {
		return err
	}
	// The walk checked every type the model declares, so a failure here is
	// a gap in the walk; still report it as the client's problem.
	if err := json.Unmarshal(body, dst); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			v.add(te.Field, "must be a JSON %s, got %s (offset %d)", jsonKind(te.Type), te.Value, te.Offset)
		} else {
			v.add("", "%v", err)
		}
		return v
	}
	return nil
}

var (
	errTooDeep   = errors.New("too deep")
	errNotObject = errors.New("not an object")

	rawMessageType = reflect.TypeFor[json.RawMessage]()
	timeType       = reflect.TypeFor[time.Time]()
	unmarshalType  = reflect.TypeFor[json.Unmarshaler]()
	// readOnlyTypes are sub-objects the service fills in and ignores on
	// write: unknown fields inside them are tolerated so that a
	// GET-modify-PUT round trip from a newer service version still works.
	readOnlyTypes = map[reflect.Type]bool{
		reflect.TypeFor[RegistrationState]():        true,
		reflect.TypeFor[wire.X509CertificateInfo](): true,
	}
)

// shapeWalker walks JSON tokens along a Go type, recording problems in v.
// It returns an error only for input it cannot continue through (syntax,
// depth); type and field problems are recorded and the walk goes on, so a
// client sees all of them at once.
type shapeWalker struct {
	dec *json.Decoder
	v   *ValidationError
}

func (w *shapeWalker) value(t reflect.Type, path string, depth int, lenient bool) error {
	if depth > maxJSONDepth {
		return errTooDeep
	}
	tok, err := w.dec.Token()
	if err != nil {
		return err
	}
	if depth == 0 {
		if d, ok := tok.(json.Delim); !ok || d != '{' {
			return errNotObject
		}
	}
	if tok == nil { // JSON null sets nothing, whatever the type.
		return nil
	}
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == nil || t == rawMessageType || t.Kind() == reflect.Interface {
		return w.skip(tok, depth)
	}
	if t == timeType {
		s, ok := tok.(string)
		if !ok {
			w.v.add(path, "must be a time string (RFC 3339)")
			return w.skip(tok, depth)
		}
		if _, err := time.Parse(time.RFC3339Nano, s); err != nil {
			w.v.add(path, "%q is not an RFC 3339 time", s)
		}
		return nil
	}
	if reflect.PointerTo(t).Implements(unmarshalType) {
		return w.skip(tok, depth) // its own decoder decides
	}
	switch t.Kind() {
	case reflect.Struct:
		if d, ok := tok.(json.Delim); !ok || d != '{' {
			w.v.add(path, "must be a JSON object")
			return w.skip(tok, depth)
		}
		return w.object(t, path, depth, lenient || readOnlyTypes[t])
	case reflect.Slice, reflect.Array:
		if d, ok := tok.(json.Delim); !ok || d != '[' {
			w.v.add(path, "must be a JSON array")
			return w.skip(tok, depth)
		}
		for i := 0; w.dec.More(); i++ {
			if err := w.value(t.Elem(), fmt.Sprintf("%s[%d]", path, i), depth+1, lenient); err != nil {
				return err
			}
		}
		_, err := w.dec.Token() // ]
		return err
	case reflect.Map:
		if d, ok := tok.(json.Delim); !ok || d != '{' {
			w.v.add(path, "must be a JSON object")
			return w.skip(tok, depth)
		}
		for w.dec.More() {
			k, err := w.dec.Token()
			if err != nil {
				return err
			}
			if err := w.value(t.Elem(), join(path, fmt.Sprint(k)), depth+1, lenient); err != nil {
				return err
			}
		}
		_, err := w.dec.Token() // }
		return err
	case reflect.String:
		if _, ok := tok.(string); !ok {
			w.v.add(path, "must be a string")
			return w.skip(tok, depth)
		}
	case reflect.Bool:
		if _, ok := tok.(bool); !ok {
			w.v.add(path, "must be true or false")
			return w.skip(tok, depth)
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n, ok := tok.(json.Number)
		if !ok {
			w.v.add(path, "must be a number")
			return w.skip(tok, depth)
		}
		if i, err := n.Int64(); err != nil || reflect.Zero(t).OverflowInt(i) {
			w.v.add(path, "must be an integer in range, got %s", n)
		}
	default:
		// No other kinds occur in the model; let encoding/json judge.
		return w.skip(tok, depth)
	}
	return nil
}

// object walks the members of a JSON object (after its '{') against the
// struct type t.
func (w *shapeWalker) object(t reflect.Type, path string, depth int, lenient bool) error {
	fields := jsonFields(t)
	seen := make(map[string]bool)
	for w.dec.More() {
		tok, err := w.dec.Token()
		if err != nil {
			return err
		}
		key, _ := tok.(string)
		field := join(path, key)
		if seen[key] {
			w.v.add(field, "duplicate key")
		}
		seen[key] = true
		ft, known := fields[key]
		switch {
		case known:
		case lenient:
			ft = nil
		default:
			if name := foldMatch(fields, key); name != "" {
				w.v.add(field, "unknown field; did you mean %q? (field names are case-sensitive)", name)
			} else {
				w.v.add(field, "unknown field")
			}
			ft = nil
		}
		if err := w.value(ft, field, depth+1, lenient); err != nil {
			return err
		}
	}
	_, err := w.dec.Token() // }
	return err
}

// skip consumes the rest of a value whose first token is tok.
func (w *shapeWalker) skip(tok json.Token, depth int) error {
	d, ok := tok.(json.Delim)
	if !ok || d == '}' || d == ']' {
		return nil
	}
	for w.dec.More() {
		if d == '{' {
			if _, err := w.dec.Token(); err != nil { // key
				return err
			}
		}
		if depth+1 > maxJSONDepth {
			return errTooDeep
		}
		t, err := w.dec.Token()
		if err != nil {
			return err
		}
		if err := w.skip(t, depth+1); err != nil {
			return err
		}
	}
	_, err := w.dec.Token()
	return err
}

// jsonFields maps the JSON names of t's fields (including those of
// untagged embedded structs, as encoding/json does) to their types.
func jsonFields(t reflect.Type) map[string]reflect.Type {
	out := make(map[string]reflect.Type)
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" && f.Type.Kind() == reflect.Struct {
			for k, v := range jsonFields(f.Type) {
				if _, ok := out[k]; !ok {
					out[k] = v
				}
			}
			continue
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out[name] = f.Type
	}
	return out
}

func foldMatch(fields map[string]reflect.Type, key string) string {
	for name := range fields {
		if strings.EqualFold(name, key) {
			return name
		}
	}
	return ""
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func jsonKind(t reflect.Type) string {
	switch t.Kind() {
	case reflect.String:
		return "string"
	case reflect.Bool:
		return "boolean"
	case reflect.Struct, reflect.Map:
		return "object"
	case reflect.Slice, reflect.Array:
		return "array"
	default:
		return "number"
	}
}
