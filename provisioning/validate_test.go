package provisioning

import (
	"bytes"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
	"time"
)

var (
	key32 = base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{1}, 32))
	key64 = base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{2}, 64))
)

// problems returns the fields of a *ValidationError, failing on any other
// error.
func problems(t *testing.T, err error) []string {
	t.Helper()
	if err == nil {
		return nil
	}
	var v *ValidationError
	if !errors.As(err, &v) {
		t.Fatalf("error %v (%T) is not a *ValidationError", err, err)
	}
	out := make([]string, len(v.Problems))
	for i, p := range v.Problems {
		out[i] = p.Field
	}
	return out
}

// checkProblems compares the problem fields exactly (order included), and
// the messages by substring.
func checkProblems(t *testing.T, err error, fields []string, msgs []string) {
	t.Helper()
	got := problems(t, err)
	if !slices.Equal(got, fields) {
		t.Fatalf("problem fields = %q, want %q (error: %v)", got, fields, err)
	}
	for _, m := range msgs {
		if !strings.Contains(err.Error(), m) {
			t.Errorf("error %q does not contain %q", err, m)
		}
	}
}

type pki struct {
	root, other, leaf, leaf2, caLeaf, noBC, noCertSign, wrongCN *x509.Certificate
}

func newPKI(t *testing.T) pki {
	root := newCert(t, certOpts{cn: "root", isCA: true})
	return pki{
		root:       root,
		other:      newCert(t, certOpts{cn: "other-root", isCA: true}),
		leaf:       newCert(t, certOpts{cn: "dev1", parent: root}),
		leaf2:      newCert(t, certOpts{cn: "DEV1", parent: root}),
		caLeaf:     newCert(t, certOpts{cn: "dev1", isCA: true, parent: root}),
		noBC:       newCert(t, certOpts{cn: "nobc", noBC: true}),
		noCertSign: newCert(t, certOpts{cn: "nosign", isCA: true, keyUsage: x509.KeyUsageDigitalSignature}),
		wrongCN:    newCert(t, certOpts{cn: "someone-else", parent: root}),
	}
}

func certField(c *x509.Certificate) *X509CertificateWithInfo {
	return &X509CertificateWithInfo{Certificate: pemOf(c)}
}

func TestIndividualEnrollmentValidate(t *testing.T) {
	k := newPKI(t)
	x509Enrollment := func() *IndividualEnrollment {
		return &IndividualEnrollment{RegistrationID: "dev1", Attestation: AttestationMechanism{
			Type: AttestationX509,
			X509: &X509Attestation{ClientCertificates: &X509Certificates{Primary: certField(k.leaf)}},
		}}
	}
	symEnrollment := func() *IndividualEnrollment {
		return &IndividualEnrollment{RegistrationID: "sym-1", Attestation: AttestationMechanism{
			Type: AttestationSymmetricKey, SymmetricKey: &SymmetricKeyAttestation{PrimaryKey: key32, SecondaryKey: key64},
		}}
	}
	tpmEnrollment := func() *IndividualEnrollment {
		return &IndividualEnrollment{RegistrationID: "tpm-1", Attestation: AttestationMechanism{
			Type: AttestationTPM, TPM: &TPMAttestation{EndorsementKey: key32},
		}}
	}
	const cc = "attestation.x509.clientCertificates"
	tests := []struct {
		name   string
		base   func() *IndividualEnrollment
		mutate func(e *IndividualEnrollment)
		fields []string
		msgs   []string
	}{
		{name: "x509 ok", base: x509Enrollment, mutate: func(e *IndividualEnrollment) {}},
		{name: "x509 with secondary, CN case differs", base: x509Enrollment, mutate: func(e *IndividualEnrollment) {
			e.Attestation.X509.ClientCertificates.Secondary = certField(k.leaf2)
		}},
		{name: "x509 base64 DER", base: x509Enrollment, mutate: func(e *IndividualEnrollment) {
			e.Attestation.X509.ClientCertificates.Primary.Certificate = b64Of(k.leaf)
		}},
		{name: "symmetric ok", base: symEnrollment, mutate: func(e *IndividualEnrollment) {}},
		{name: "tpm ok", base: tpmEnrollment, mutate: func(e *IndividualEnrollment) {}},
		{name: "full policy ok", base: symEnrollment, mutate: func(e *IndividualEnrollment) {
			e.DeviceID = "dev.1_%*?!(),:=@$'"
			e.IoTHubs = []string{"hub1.azure-devices.net", "hub2.azure-devices.net"}
			e.AllocationPolicy = AllocationHashed
			e.ProvisioningStatus = StatusEnabled
			e.Capabilities = &DeviceCapabilities{IoTEdge: true}
			e.InitialTwin = &InitialTwin{Tags: json.RawMessage(`{"a":1}`), Properties: &InitialTwinProperties{Desired: json.RawMessage(` {"b":{}} `)}}
			e.OptionalDeviceInformation = json.RawMessage(`{"x":"y"}`)
		}},
		{name: "disabled none blocks an ID", base: symEnrollment, mutate: func(e *IndividualEnrollment) {
			e.Attestation = AttestationMechanism{Type: AttestationNone}
			e.ProvisioningStatus = StatusDisabled
		}},

		{name: "bad registration ID", base: symEnrollment, mutate: func(e *IndividualEnrollment) { e.RegistrationID = "dev 1" },
			fields: []string{"registrationId"}, msgs: []string{"character ' ' at position 3"}},
		{name: "x509 registration ID over 64", base: x509Enrollment, mutate: func(e *IndividualEnrollment) {
			e.RegistrationID = strings.Repeat("a", 65)
		}, fields: []string{"registrationId", cc + ".primary.certificate"}, msgs: []string{"limit is 64", "certificate CN"}},
		{name: "symmetric registration ID may be 128", base: symEnrollment, mutate: func(e *IndividualEnrollment) {
			e.RegistrationID = strings.Repeat("a", 128)
		}},
		{name: "bad device ID", base: symEnrollment, mutate: func(e *IndividualEnrollment) { e.DeviceID = "dev#1" },
			fields: []string{"deviceId"}, msgs: []string{"'#'"}},
		{name: "device ID too long", base: symEnrollment, mutate: func(e *IndividualEnrollment) { e.DeviceID = strings.Repeat("d", 129) },
			fields: []string{"deviceId"}},
		{name: "missing type", base: symEnrollment, mutate: func(e *IndividualEnrollment) { e.Attestation.Type = "" },
			fields: []string{"attestation.type"}, msgs: []string{"is required"}},
		{name: "unknown type", base: symEnrollment, mutate: func(e *IndividualEnrollment) { e.Attestation.Type = "X509" },
			fields: []string{"attestation.type"}, msgs: []string{`"X509"`}},
		{name: "enabled none", base: symEnrollment, mutate: func(e *IndividualEnrollment) {
			e.Attestation = AttestationMechanism{Type: AttestationNone}
		}, fields: []string{"attestation.type"}},
		{name: "sub-object mismatch", base: symEnrollment, mutate: func(e *IndividualEnrollment) {
			e.Attestation.Type = AttestationTPM
		}, fields: []string{"attestation.tpm", "attestation.symmetricKey"}, msgs: []string{"is required", "must be absent"}},
		{name: "x509 missing client certificates", base: x509Enrollment, mutate: func(e *IndividualEnrollment) {
			e.Attestation.X509.ClientCertificates = nil
		}, fields: []string{cc}},
		{name: "x509 missing primary", base: x509Enrollment, mutate: func(e *IndividualEnrollment) {
			e.Attestation.X509.ClientCertificates = &X509Certificates{Secondary: certField(k.leaf)}
		}, fields: []string{cc + ".primary"}},
		{name: "x509 empty certificate", base: x509Enrollment, mutate: func(e *IndividualEnrollment) {
			e.Attestation.X509.ClientCertificates.Primary.Certificate = ""
		}, fields: []string{cc + ".primary.certificate"}, msgs: []string{"is required"}},
		{name: "x509 signing certificates on individual", base: x509Enrollment, mutate: func(e *IndividualEnrollment) {
			e.Attestation.X509.SigningCertificates = &X509Certificates{Primary: certField(k.root)}
			e.Attestation.X509.CAReferences = &X509CAReferences{Primary: "ca"}
		}, fields: []string{"attestation.x509.signingCertificates", "attestation.x509.caReferences"}},
		{name: "x509 unparseable", base: x509Enrollment, mutate: func(e *IndividualEnrollment) {
			e.Attestation.X509.ClientCertificates.Primary.Certificate = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
		}, fields: []string{cc + ".primary.certificate"}, msgs: []string{"bad certificate"}},
		{name: "x509 two certificates", base: x509Enrollment, mutate: func(e *IndividualEnrollment) {
			e.Attestation.X509.ClientCertificates.Primary.Certificate = pemOf(k.leaf) + pemOf(k.root)
		}, fields: []string{cc + ".primary.certificate"}, msgs: []string{"contains 2 certificates"}},
		{name: "x509 client certificate is a CA", base: x509Enrollment, mutate: func(e *IndividualEnrollment) {
			e.Attestation.X509.ClientCertificates.Primary = certField(k.caLeaf)
		}, fields: []string{cc + ".primary.certificate"}, msgs: []string{"end entity"}},
		{name: "x509 CN mismatch on secondary", base: x509Enrollment, mutate: func(e *IndividualEnrollment) {
			e.Attestation.X509.ClientCertificates.Secondary = certField(k.wrongCN)
		}, fields: []string{cc + ".secondary.certificate"}, msgs: []string{`"someone-else" does not match registrationId "dev1"`}},
		{name: "symmetric missing primary", base: symEnrollment, mutate: func(e *IndividualEnrollment) {
			e.Attestation.SymmetricKey.PrimaryKey = ""
		}, fields: []string{"attestation.symmetricKey.primaryKey"}},
		{name: "symmetric keys bad", base: symEnrollment, mutate: func(e *IndividualEnrollment) {
			e.Attestation.SymmetricKey.PrimaryKey = "not base64!"
			e.Attestation.SymmetricKey.SecondaryKey = base64.StdEncoding.EncodeToString(make([]byte, 15))
		}, fields: []string{"attestation.symmetricKey.primaryKey", "attestation.symmetricKey.secondaryKey"},
			msgs: []string{"not valid base64", "15 bytes"}},
		{name: "symmetric key too long", base: symEnrollment, mutate: func(e *IndividualEnrollment) {
			e.Attestation.SymmetricKey.PrimaryKey = base64.StdEncoding.EncodeToString(make([]byte, 65))
		}, fields: []string{"attestation.symmetricKey.primaryKey"}, msgs: []string{"65 bytes"}},
		{name: "tpm missing EK", base: tpmEnrollment, mutate: func(e *IndividualEnrollment) {
			e.Attestation.TPM.EndorsementKey = ""
			e.Attestation.TPM.StorageRootKey = "%%%"
		}, fields: []string{"attestation.tpm.endorsementKey", "attestation.tpm.storageRootKey"}},
		{name: "tpm EK too large", base: tpmEnrollment, mutate: func(e *IndividualEnrollment) {
			e.Attestation.TPM.EndorsementKey = base64.StdEncoding.EncodeToString(make([]byte, MaxTPMKeyLen+1))
		}, fields: []string{"attestation.tpm.endorsementKey"}},
		{name: "optional device information not an object", base: symEnrollment, mutate: func(e *IndividualEnrollment) {
			e.OptionalDeviceInformation = json.RawMessage(`[1]`)
		}, fields: []string{"optionalDeviceInformation"}, msgs: []string{"JSON object"}},
		{name: "null optional device information", base: symEnrollment, mutate: func(e *IndividualEnrollment) {
			e.OptionalDeviceInformation = json.RawMessage(`null`)
		}},
		{name: "collects everything", base: x509Enrollment, mutate: func(e *IndividualEnrollment) {
			e.RegistrationID = "-dev1"
			e.DeviceID = "a b"
			e.ProvisioningStatus = "off"
		}, fields: []string{"registrationId", "deviceId", cc + ".primary.certificate", "provisioningStatus"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := tt.base()
			tt.mutate(e)
			checkProblems(t, e.Validate(), tt.fields, tt.msgs)
		})
	}
}

func TestEnrollmentGroupValidate(t *testing.T) {
	k := newPKI(t)
	signing := func() *EnrollmentGroup {
		return &EnrollmentGroup{EnrollmentGroupID: "group-1", Attestation: AttestationMechanism{
			Type: AttestationX509,
			X509: &X509Attestation{SigningCertificates: &X509Certificates{Primary: certField(k.root)}},
		}}
	}
	refs := func() *EnrollmentGroup {
		return &EnrollmentGroup{EnrollmentGroupID: "group-2", Attestation: AttestationMechanism{
			Type: AttestationX509,
			X509: &X509Attestation{CAReferences: &X509CAReferences{Primary: "root-ca", Secondary: "root_ca.2"}},
		}}
	}
	sym := func() *EnrollmentGroup {
		return &EnrollmentGroup{EnrollmentGroupID: "group-3", Attestation: AttestationMechanism{
			Type: AttestationSymmetricKey, SymmetricKey: &SymmetricKeyAttestation{PrimaryKey: key64},
		}}
	}
	const sc = "attestation.x509.signingCertificates"
	tests := []struct {
		name   string
		base   func() *EnrollmentGroup
		mutate func(g *EnrollmentGroup)
		fields []string
		msgs   []string
	}{
		{name: "signing ok", base: signing, mutate: func(g *EnrollmentGroup) {
			g.Attestation.X509.SigningCertificates.Secondary = certField(k.other)
		}},
		{name: "references ok", base: refs, mutate: func(g *EnrollmentGroup) {}},
		{name: "symmetric ok", base: sym, mutate: func(g *EnrollmentGroup) {}},
		{name: "bad group ID", base: sym, mutate: func(g *EnrollmentGroup) { g.EnrollmentGroupID = "group/1" },
			fields: []string{"enrollmentGroupId"}, msgs: []string{"enrollment group ID has character '/'"}},
		{name: "group ID too long", base: sym, mutate: func(g *EnrollmentGroup) { g.EnrollmentGroupID = strings.Repeat("g", 129) },
			fields: []string{"enrollmentGroupId"}},
		{name: "tpm group by manufacturer CA ok", base: signing, mutate: func(g *EnrollmentGroup) {
			g.Attestation.Type = AttestationTPM
		}},
		{name: "tpm group by CA reference ok", base: refs, mutate: func(g *EnrollmentGroup) {
			g.Attestation.Type = AttestationTPM
		}},
		{name: "tpm group with an EK", base: signing, mutate: func(g *EnrollmentGroup) {
			g.Attestation.Type = AttestationTPM
			g.Attestation.TPM = &TPMAttestation{EndorsementKey: key32}
		}, fields: []string{"attestation.tpm"}, msgs: []string{"must be absent in a group"}},
		{name: "tpm group without CA", base: sym, mutate: func(g *EnrollmentGroup) {
			g.Attestation = AttestationMechanism{Type: AttestationTPM, TPM: &TPMAttestation{EndorsementKey: key32}}
		}, fields: []string{"attestation.tpm", "attestation.x509"}, msgs: []string{"must be absent", "manufacturer CA"}},
		{name: "tpm group with a symmetric key", base: signing, mutate: func(g *EnrollmentGroup) {
			g.Attestation.Type = AttestationTPM
			g.Attestation.SymmetricKey = &SymmetricKeyAttestation{PrimaryKey: key64}
		}, fields: []string{"attestation.symmetricKey"}},
		{name: "tpm group CA not a CA", base: signing, mutate: func(g *EnrollmentGroup) {
			g.Attestation.Type = AttestationTPM
			g.Attestation.X509.SigningCertificates.Primary = certField(k.leaf)
		}, fields: []string{sc + ".primary.certificate"}, msgs: []string{"CA:TRUE"}},
		{name: "none not for groups", base: sym, mutate: func(g *EnrollmentGroup) {
			g.Attestation = AttestationMechanism{Type: AttestationNone}
			g.ProvisioningStatus = StatusDisabled
		}, fields: []string{"attestation.type"}},
		{name: "missing type", base: sym, mutate: func(g *EnrollmentGroup) { g.Attestation.Type = "" },
			fields: []string{"attestation.type"}},
		{name: "unknown type", base: sym, mutate: func(g *EnrollmentGroup) { g.Attestation.Type = "psk" },
			fields: []string{"attestation.type"}},
		{name: "both signing and references", base: signing, mutate: func(g *EnrollmentGroup) {
			g.Attestation.X509.CAReferences = &X509CAReferences{Primary: "x"}
		}, fields: []string{"attestation.x509"}, msgs: []string{"not both"}},
		{name: "neither", base: signing, mutate: func(g *EnrollmentGroup) {
			g.Attestation.X509.SigningCertificates = nil
		}, fields: []string{"attestation.x509"}},
		{name: "client certificates on group", base: signing, mutate: func(g *EnrollmentGroup) {
			g.Attestation.X509.ClientCertificates = &X509Certificates{Primary: certField(k.leaf)}
		}, fields: []string{"attestation.x509.clientCertificates"}},
		{name: "signing certificate not a CA", base: signing, mutate: func(g *EnrollmentGroup) {
			g.Attestation.X509.SigningCertificates.Primary = certField(k.leaf)
			g.Attestation.X509.SigningCertificates.Secondary = certField(k.noBC)
		}, fields: []string{sc + ".primary.certificate", sc + ".secondary.certificate"}, msgs: []string{"CA:TRUE"}},
		{name: "signing certificate cannot sign", base: signing, mutate: func(g *EnrollmentGroup) {
			g.Attestation.X509.SigningCertificates.Primary = certField(k.noCertSign)
		}, fields: []string{sc + ".primary.certificate"}, msgs: []string{"keyCertSign"}},
		{name: "signing missing primary", base: signing, mutate: func(g *EnrollmentGroup) {
			g.Attestation.X509.SigningCertificates = &X509Certificates{}
		}, fields: []string{sc + ".primary"}},
		{name: "reference missing primary", base: refs, mutate: func(g *EnrollmentGroup) {
			g.Attestation.X509.CAReferences.Primary = ""
			g.Attestation.X509.CAReferences.Secondary = "bad name"
		}, fields: []string{"attestation.x509.caReferences.primary", "attestation.x509.caReferences.secondary"}},
		{name: "static needs one hub", base: sym, mutate: func(g *EnrollmentGroup) {
			g.AllocationPolicy = AllocationStatic
			g.IoTHubs = []string{"a.example", "b.example"}
		}, fields: []string{"iotHubs"}, msgs: []string{"got 2"}},
		{name: "static without hub", base: sym, mutate: func(g *EnrollmentGroup) { g.AllocationPolicy = AllocationStatic },
			fields: []string{"iotHubs"}},
		{name: "static with legacy host name", base: sym, mutate: func(g *EnrollmentGroup) {
			g.AllocationPolicy = AllocationStatic
			g.IoTHubHostName = "a.example"
		}},
		{name: "static with both agreeing", base: sym, mutate: func(g *EnrollmentGroup) {
			g.AllocationPolicy = AllocationStatic
			g.IoTHubHostName = "A.example"
			g.IoTHubs = []string{"a.example"}
		}},
		{name: "host name conflicts with hubs", base: sym, mutate: func(g *EnrollmentGroup) {
			g.IoTHubHostName = "c.example"
			g.IoTHubs = []string{"a.example"}
		}, fields: []string{"iotHubHostName"}},
		{name: "bad and duplicate hubs", base: sym, mutate: func(g *EnrollmentGroup) {
			g.IoTHubs = []string{"a.example", "bad_host", "A.EXAMPLE"}
			g.IoTHubHostName = "-x"
		}, fields: []string{"iotHubHostName", "iotHubs[1]", "iotHubs[2]"}, msgs: []string{"duplicates iotHubs[0]"}},
		{name: "unknown policy and status", base: sym, mutate: func(g *EnrollmentGroup) {
			g.AllocationPolicy = "roundRobin"
			g.ProvisioningStatus = "Enabled"
		}, fields: []string{"provisioningStatus", "allocationPolicy"}},
		{name: "custom ok", base: sym, mutate: func(g *EnrollmentGroup) {
			g.AllocationPolicy = AllocationCustom
			g.CustomAllocationDefinition = &CustomAllocationDefinition{WebhookURL: "https://fn.example/api/alloc?code=abc", APIVersion: "2021-10-01"}
		}},
		{name: "custom preview version ok", base: sym, mutate: func(g *EnrollmentGroup) {
			g.AllocationPolicy = AllocationCustom
			g.CustomAllocationDefinition = &CustomAllocationDefinition{WebhookURL: "https://fn.example/", APIVersion: "2018-09-01-preview"}
		}},
		{name: "custom without definition", base: sym, mutate: func(g *EnrollmentGroup) { g.AllocationPolicy = AllocationCustom },
			fields: []string{"customAllocationDefinition"}},
		{name: "custom definition empty", base: sym, mutate: func(g *EnrollmentGroup) {
			g.AllocationPolicy = AllocationCustom
			g.CustomAllocationDefinition = &CustomAllocationDefinition{}
		}, fields: []string{"customAllocationDefinition.webhookUrl", "customAllocationDefinition.apiVersion"}},
		{name: "custom http and old version", base: sym, mutate: func(g *EnrollmentGroup) {
			g.AllocationPolicy = AllocationCustom
			g.CustomAllocationDefinition = &CustomAllocationDefinition{WebhookURL: "http://fn.example/", APIVersion: "2017-11-15"}
		}, fields: []string{"customAllocationDefinition.webhookUrl", "customAllocationDefinition.apiVersion"}, msgs: []string{"https", "older"}},
		{name: "custom bad version and user info", base: sym, mutate: func(g *EnrollmentGroup) {
			g.AllocationPolicy = AllocationCustom
			g.CustomAllocationDefinition = &CustomAllocationDefinition{WebhookURL: "https://u:p@fn.example/", APIVersion: "2021-10-01-beta"}
		}, fields: []string{"customAllocationDefinition.webhookUrl", "customAllocationDefinition.apiVersion"}, msgs: []string{"user information"}},
		{name: "twin not objects", base: sym, mutate: func(g *EnrollmentGroup) {
			g.InitialTwin = &InitialTwin{Tags: json.RawMessage(`"x"`), Properties: &InitialTwinProperties{Desired: json.RawMessage(`{bad`)}}
		}, fields: []string{"initialTwin.tags", "initialTwin.properties.desired"}, msgs: []string{"JSON object", "not valid JSON"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := tt.base()
			tt.mutate(g)
			checkProblems(t, g.Validate(), tt.fields, tt.msgs)
		})
	}
}

func TestCACertificateValidate(t *testing.T) {
	k := newPKI(t)
	tests := []struct {
		name   string
		c      CACertificate
		fields []string
	}{
		{name: "ok", c: CACertificate{Name: "root-ca", Certificate: pemOf(k.root)}},
		{name: "bad name and missing certificate", c: CACertificate{Name: "-root"}, fields: []string{"name", "certificate"}},
		{name: "name too long", c: CACertificate{Name: strings.Repeat("n", 65), Certificate: pemOf(k.root)}, fields: []string{"name"}},
		{name: "not a CA", c: CACertificate{Name: "leaf", Certificate: pemOf(k.leaf)}, fields: []string{"certificate"}},
		{name: "garbage", c: CACertificate{Name: "x", Certificate: "garbage"}, fields: []string{"certificate"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkProblems(t, tt.c.Validate(), tt.fields, nil)
		})
	}
}

func TestRegistrationStateValidate(t *testing.T) {
	tests := []struct {
		name   string
		r      RegistrationState
		fields []string
	}{
		{name: "assigned", r: RegistrationState{RegistrationID: "dev1", Status: RegistrationAssigned, AssignedHub: "hub.example", DeviceID: "dev1",
			Substatus: SubstatusInitialAssignment, AttestationType: AttestationX509, EnrollmentGroupID: "g1", Payload: json.RawMessage(`{"a":1}`)}},
		{name: "assigning", r: RegistrationState{RegistrationID: "dev1", Status: RegistrationAssigning}},
		{name: "failed", r: RegistrationState{RegistrationID: "dev1", Status: RegistrationFailed, ErrorCode: 400208, ErrorMessage: "no hub"}},
		{name: "disabled", r: RegistrationState{RegistrationID: "dev1", Status: RegistrationDisabled}},
		{name: "assigned incomplete", r: RegistrationState{RegistrationID: "dev1", Status: RegistrationAssigned, ErrorCode: 400208, ErrorMessage: "x", Substatus: "moved"},
			fields: []string{"assignedHub", "deviceId", "errorCode", "substatus"}},
		{name: "failed without code", r: RegistrationState{RegistrationID: "dev1", Status: RegistrationFailed, ErrorMessage: "?"},
			fields: []string{"errorCode", "errorMessage"}},
		{name: "code out of range", r: RegistrationState{RegistrationID: "dev1", Status: RegistrationFailed, ErrorCode: 401},
			fields: []string{"errorCode"}},
		{name: "assigning with code and substatus", r: RegistrationState{RegistrationID: "dev1", Status: RegistrationAssigning, ErrorCode: 500000, Substatus: SubstatusDeviceDataReset},
			fields: []string{"errorCode", "substatus"}},
		{name: "missing status and bad ID", r: RegistrationState{RegistrationID: "", DeviceID: "a/b", AssignedHub: "x_y"},
			fields: []string{"registrationId", "deviceId", "assignedHub", "status"}},
		{name: "unknown status and attestation", r: RegistrationState{RegistrationID: "dev1", Status: "done", AttestationType: "psk", EnrollmentGroupID: "g 1", Payload: json.RawMessage(`{`)},
			fields: []string{"status", "attestationType", "enrollmentGroupId", "payload"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkProblems(t, tt.r.Validate(), tt.fields, nil)
		})
	}
}

func TestOperationValidate(t *testing.T) {
	now := time.Now()
	assigned := &RegistrationState{RegistrationID: "DEV1", Status: RegistrationAssigned, AssignedHub: "hub.example", DeviceID: "dev1"}
	tests := []struct {
		name   string
		op     Operation
		fields []string
	}{
		{name: "assigning", op: Operation{OperationID: "4.abc.0", RegistrationID: "dev1", Status: RegistrationAssigning, Created: now, Expires: now.Add(time.Minute)}},
		{name: "assigned", op: Operation{OperationID: "op", RegistrationID: "dev1", Status: RegistrationAssigned, Result: assigned, Created: now, Expires: now.Add(time.Minute)}},
		{name: "unassigned never", op: Operation{OperationID: "op", RegistrationID: "dev1", Status: RegistrationUnassigned, Created: now, Expires: now.Add(time.Minute)},
			fields: []string{"status"}},
		{name: "final without result", op: Operation{OperationID: "op", RegistrationID: "dev1", Status: RegistrationFailed, Created: now, Expires: now.Add(time.Minute)},
			fields: []string{"result"}},
		{name: "assigning with result", op: Operation{OperationID: "op", RegistrationID: "dev1", Status: RegistrationAssigning, Result: assigned, Created: now, Expires: now.Add(time.Minute)},
			fields: []string{"result"}},
		{name: "result disagrees", op: Operation{OperationID: "op", RegistrationID: "dev2", Status: RegistrationFailed,
			Result: &RegistrationState{RegistrationID: "dev1", Status: RegistrationAssigned}, Created: now, Expires: now.Add(time.Minute)},
			fields: []string{"result.status", "result.registrationId", "result.assignedHub", "result.deviceId"}},
		{name: "bad ids and times", op: Operation{OperationID: "op id", RegistrationID: "", Status: "", Created: time.Time{}, Expires: time.Time{}},
			fields: []string{"operationId", "registrationId", "status", "created", "expires"}},
		{name: "empty and long operation IDs", op: Operation{OperationID: strings.Repeat("o", MaxOperationIDLen+1), RegistrationID: "dev1", Status: "weird", Created: now, Expires: now},
			fields: []string{"operationId", "status", "expires"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkProblems(t, tt.op.Validate(), tt.fields, nil)
		})
	}
}

func TestValidateIDs(t *testing.T) {
	for _, ok := range []string{"a", "Dev-1.x_y:z", "dev-", strings.Repeat("g", 128)} {
		if err := ValidateEnrollmentGroupID(ok); err != nil {
			t.Errorf("ValidateEnrollmentGroupID(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", "-a", "a.", "a b", "ä"} {
		if err := ValidateEnrollmentGroupID(bad); err == nil {
			t.Errorf("ValidateEnrollmentGroupID(%q) accepted", bad)
		}
	}
	for _, ok := range []string{"a", "A-._%*?!(),:=@$'z"} {
		if err := ValidateDeviceID(ok); err != nil {
			t.Errorf("ValidateDeviceID(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", "a+b", "a#b", "a/b", "a;b", "é", strings.Repeat("d", 129)} {
		if err := ValidateDeviceID(bad); err == nil {
			t.Errorf("ValidateDeviceID(%q) accepted", bad)
		}
	}
}

func TestGenerateMissingKeys(t *testing.T) {
	a := &AttestationMechanism{Type: AttestationSymmetricKey, SymmetricKey: &SymmetricKeyAttestation{PrimaryKey: key32}}
	if err := a.GenerateMissingKeys(nil); err != nil {
		t.Fatal(err)
	}
	if a.SymmetricKey.PrimaryKey != key32 {
		t.Errorf("given primary key replaced")
	}
	k, err := DecodeSymmetricKey(a.SymmetricKey.SecondaryKey)
	if err != nil || len(k) != GeneratedSymmetricKeyLen {
		t.Errorf("generated secondary key: %d bytes, %v", len(k), err)
	}

	none := &AttestationMechanism{Type: AttestationSymmetricKey}
	if err := none.GenerateMissingKeys(nil); err != nil || none.SymmetricKey.PrimaryKey == none.SymmetricKey.SecondaryKey {
		t.Errorf("keys not generated or equal: %+v %v", none.SymmetricKey, err)
	}
	short := &AttestationMechanism{Type: AttestationSymmetricKey}
	if err := short.GenerateMissingKeys(bytes.NewReader(make([]byte, 10))); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("short random source: %v", err)
	}
	x := &AttestationMechanism{Type: AttestationX509}
	if err := x.GenerateMissingKeys(nil); err != nil || x.SymmetricKey != nil {
		t.Errorf("x509 attestation touched: %+v %v", x, err)
	}
}

func TestDecodeEnrollment(t *testing.T) {
	k := newPKI(t)
	certJSON, _ := json.Marshal(pemOf(k.leaf))
	valid := `{"registrationId":"dev1","attestation":{"type":"x509","x509":{"clientCertificates":{"primary":{"certificate":` + string(certJSON) +
		`,"info":{"subjectName":"stale","futureField":1}}}}},"registrationState":{"registrationId":"dev1","status":"assigned","newField":true},` +
		`"etag":"\"abc\"","createdDateTimeUtc":"2024-01-02T03:04:05.123Z","initialTwin":{"tags":{"a":{"b":[1,2,{"c":null}]}},"properties":{"desired":{}}},` +
		`"reprovisionPolicy":{"updateHubAssignment":false},"capabilities":{"iotEdge":true},"iotHubs":["hub.example"],"provisioningStatus":"enabled"}`

	e, err := DecodeEnrollment(strings.NewReader(valid))
	if err != nil {
		t.Fatalf("DecodeEnrollment: %v", err)
	}
	if e.RegistrationState != nil || e.Attestation.X509.ClientCertificates.Primary.Info != nil {
		t.Errorf("read-only fields kept: %+v", e)
	}
	if e.ETag != `"abc"` || e.CreatedDateTimeUTC == nil || e.ReprovisionPolicy.UpdatesHubAssignment() || !e.Capabilities.IoTEdge {
		t.Errorf("fields lost: %+v", e)
	}
	if err := e.Validate(); err != nil {
		t.Errorf("decoded enrollment invalid: %v", err)
	}

	tests := []struct {
		name   string
		body   string
		fields []string
		msgs   []string
	}{
		{name: "empty", body: " \n", fields: []string{""}, msgs: []string{"empty"}},
		{name: "not an object", body: `[1]`, fields: []string{""}, msgs: []string{"JSON object"}},
		{name: "syntax error", body: `{"registrationId": "dev1",}`, fields: []string{""}, msgs: []string{"malformed JSON at offset"}},
		{name: "truncated", body: `{"registrationId": "dev1"`, fields: []string{""}, msgs: []string{"unexpected end"}},
		{name: "trailing data", body: `{"registrationId":"dev1"} {}`, fields: []string{""}, msgs: []string{"after the JSON object"}},
		{name: "unknown fields everywhere", body: `{"registrationID":"x","foo":1,"attestation":{"type":"x509","x509":{"clientCertificates":{"primary":{"cert":"x"}}}},"initialTwin":{"properties":{"reported":{}}}}`,
			fields: []string{"registrationID", "foo", "attestation.x509.clientCertificates.primary.cert", "initialTwin.properties.reported"},
			msgs:   []string{`did you mean "registrationId"`}},
		{name: "duplicate key", body: `{"registrationId":"a","registrationId":"b"}`, fields: []string{"registrationId"}, msgs: []string{"duplicate"}},
		{name: "wrong types", body: `{"registrationId":1,"iotHubs":"hub","capabilities":{"iotEdge":"yes"},"attestation":[],"reprovisionPolicy":{"updateHubAssignment":0},"createdDateTimeUtc":"yesterday"}`,
			fields: []string{"registrationId", "iotHubs", "capabilities.iotEdge", "attestation", "reprovisionPolicy.updateHubAssignment", "createdDateTimeUtc"},
			msgs:   []string{"must be a string", "must be a JSON array", "true or false", "must be a JSON object", "RFC 3339"}},
		{name: "array element type", body: `{"iotHubs":["a.example",2]}`, fields: []string{"iotHubs[1]"}},
		{name: "too deep", body: `{"initialTwin":{"tags":` + strings.Repeat(`{"a":`, 40) + `1` + strings.Repeat(`}`, 40) + `}}`,
			fields: []string{""}, msgs: []string{"nesting deeper"}},
		{name: "too large", body: `{"registrationId":"` + strings.Repeat("a", MaxRequestBytes) + `"}`, fields: []string{""}, msgs: []string{"larger than"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, err := DecodeEnrollment(strings.NewReader(tt.body))
			if e != nil {
				t.Errorf("got an enrollment with an error")
			}
			checkProblems(t, err, tt.fields, tt.msgs)
		})
	}
}

func TestDecodeGroupAndCA(t *testing.T) {
	g, err := DecodeEnrollmentGroup(strings.NewReader(`{"enrollmentGroupId":"g1","attestation":{"type":"x509","x509":{"caReferences":{"primary":"root"}}},"allocationPolicy":"static","iotHubHostName":"hub.example"}`))
	if err != nil || g.EnrollmentGroupID != "g1" || g.IoTHubHostName != "hub.example" || g.CAReferenceNames()[0] != "root" {
		t.Fatalf("DecodeEnrollmentGroup = %+v, %v", g, err)
	}
	_, err = DecodeEnrollmentGroup(strings.NewReader(`{"enrollmentGroupId":"g1","deviceId":"x","registrationState":{}}`))
	checkProblems(t, err, []string{"deviceId", "registrationState"}, []string{"unknown field"})

	c, err := DecodeCACertificate(strings.NewReader(`{"name":"root","certificate":"abc","isVerified":true}`))
	if err != nil || c.Name != "root" || !c.IsVerified {
		t.Fatalf("DecodeCACertificate = %+v, %v", c, err)
	}
	_, err = DecodeCACertificate(strings.NewReader(`{"name":"root","properties":{}}`))
	checkProblems(t, err, []string{"properties"}, nil)
}

type failingReader struct{}

func (failingReader) Read([]byte) (int, error) { return 0, errors.New("connection reset") }

func TestDecodeReadError(t *testing.T) {
	_, err := DecodeEnrollment(failingReader{})
	if err == nil || IsValidation(err) {
		t.Fatalf("read failure = %v, want a non-validation error", err)
	}
}

func FuzzDecodeEnrollment(f *testing.F) {
	f.Add(`{"registrationId":"dev1","attestation":{"type":"symmetricKey","symmetricKey":{"primaryKey":"` + key32 + `"}}}`)
	f.Add(`{"initialTwin":{"tags":{"a":[1,{"b":null}]}}}`)
	f.Add(`{"iotHubs":[1,"x"],"registrationState":{"x":{}}}`)
	f.Fuzz(func(t *testing.T, body string) {
		e, err := DecodeEnrollment(strings.NewReader(body))
		if err != nil {
			if !IsValidation(err) {
				t.Fatalf("non-validation error %v", err)
			}
			return
		}
		_ = e.Validate()
		e.FillInfo()
		// Whatever decodes strictly must also decode with encoding/json.
		var plain IndividualEnrollment
		if err := json.Unmarshal([]byte(body), &plain); err != nil {
			t.Fatalf("strict decode accepted what encoding/json refuses: %v", err)
		}
	})
}
