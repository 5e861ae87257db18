package wire

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite golden files")

func TestDecodeRegisterRequest(t *testing.T) {
	tests := []struct {
		name    string
		body    string
		id      string
		payload string
		tpm     *TPMAttestation
	}{
		{"C", `{"registrationId":"d1"}`, "d1", "", nil},
		{"C poll body reused", `{"registrationId":"d1"}`, "d1", "", nil},
		{"embedded C empty", ``, "", "", nil},
		{"Node poll one space", ` `, "", "", nil},
		{"Node register", `{"registrationId":"dev1"}`, "dev1", "", nil},
		{"Python null payload", `{"payload": null, "registrationId": "d1"}`, "d1", "", nil},
		{"Java string payload", `{"registrationId":"d1","payload":"{\"a\":1}"}`, "d1", `"{\"a\":1}"`, nil},
		{"C# v1 empty", ``, "", "", nil},
		{"C# v1 payload only", `{"payload":{"modelId":"dtmi:x;1"}}`, "", `{"modelId":"dtmi:x;1"}`, nil},
		{"bare null", `null`, "", "", nil},
		{"unknown fields", `{"registrationId":"d1","csr":"MIIB","extra":{"a":[1,2]}}`, "d1", "", nil},
		{"TPM", `{"registrationId":"t1","tpm":{"endorsementKey":"AToAAQAL","storageRootKey":"AToAAQAL"}}`, "t1", "", &TPMAttestation{EndorsementKey: "AToAAQAL", StorageRootKey: "AToAAQAL"}},
		{"TPM second leg", `{"registrationId":"t1","tpm":{"endorsementKey":"AToA","storageRootKey":"AToA","sasToken":"SharedAccessSignature sr=a&sig=b&se=1"}}`, "t1", "",
			&TPMAttestation{EndorsementKey: "AToA", StorageRootKey: "AToA", SASToken: "SharedAccessSignature sr=a&sig=b&se=1"}},
		{"TPM EK certificate", `{"tpm":{"endorsementKey":"AToA","endorsementKeyCertificate":"MIIB","endorsementKeyCertificateChain":["MIIC"]}}`, "", "",
			&TPMAttestation{EndorsementKey: "AToA", EndorsementKeyCertificate: "MIIB", EndorsementKeyCertificateChain: []string{"MIIC"}}},
		{"TPM null", `{"registrationId":"t1","tpm":null}`, "t1", "", nil},
		{"whitespace and newline", "\n\t{ \"registrationId\" : \"d1\" }\r\n", "d1", "", nil},
		{"payload array", `{"payload":[1,2]}`, "", `[1,2]`, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := DecodeRegisterRequest([]byte(tt.body))
			if err != nil {
				t.Fatalf("DecodeRegisterRequest(%q): %v", tt.body, err)
			}
			if req.RegistrationID != tt.id || string(req.Payload) != tt.payload || !reflect.DeepEqual(req.TPM, tt.tpm) {
				t.Fatalf("DecodeRegisterRequest(%q) = %+v (payload %s)", tt.body, req, req.Payload)
			}
		})
	}
}

func TestDecodeRegisterRequestErrors(t *testing.T) {
	tests := []struct {
		name, body, field string
		code              int
	}{
		{"not JSON", `registrationId=d1`, "", ErrorCodeInvalidJSON},
		{"truncated", `{"registrationId":"d1"`, "", ErrorCodeInvalidJSON},
		{"trailing data", `{"registrationId":"d1"} x`, "", ErrorCodeInvalidJSON},
		{"array", `[{"registrationId":"d1"}]`, "", ErrorCodeInvalidJSON},
		{"string", `"d1"`, "", ErrorCodeInvalidJSON},
		{"number", `42`, "", ErrorCodeInvalidJSON},
		{"id number", `{"registrationId":5}`, "registrationId", ErrorCodeInvalidJSON},
		{"tpm string", `{"tpm":"AToA"}`, "tpm", ErrorCodeInvalidJSON},
		{"tpm ek number", `{"tpm":{"endorsementKey":1}}`, "tpm.endorsementKey", ErrorCodeInvalidJSON},
		{"tpm without ek", `{"tpm":{"storageRootKey":"AToA"}}`, "tpm.endorsementKey", ErrorCodeInvalidJSON},
		{"tpm ek not base64", `{"tpm":{"endorsementKey":"not base64!"}}`, "tpm.endorsementKey", ErrorCodeInvalidJSON},
		{"tpm srk not base64", `{"tpm":{"endorsementKey":"AToA","storageRootKey":"%%"}}`, "tpm.storageRootKey", ErrorCodeInvalidJSON},
		{"tpm sas too long", `{"tpm":{"endorsementKey":"AToA","sasToken":"` + strings.Repeat("a", MaxSASTokenLen+1) + `"}}`, "tpm.sasToken", ErrorCodeInvalidJSON},
		{"tpm sas number", `{"tpm":{"endorsementKey":"AToA","sasToken":1}}`, "tpm.sasToken", ErrorCodeInvalidJSON},
		{"tpm ek cert not base64", `{"tpm":{"endorsementKey":"AToA","endorsementKeyCertificate":"%%"}}`, "tpm.endorsementKeyCertificate", ErrorCodeInvalidJSON},
		{"tpm ek cert too long", `{"tpm":{"endorsementKey":"AToA","endorsementKeyCertificate":"` + strings.Repeat("A", MaxEKCertificateLen+4) + `"}}`, "tpm.endorsementKeyCertificate", ErrorCodeInvalidJSON},
		{"tpm chain without cert", `{"tpm":{"endorsementKey":"AToA","endorsementKeyCertificateChain":["MIIB"]}}`, "tpm.endorsementKeyCertificateChain", ErrorCodeInvalidJSON},
		{"tpm chain too deep", `{"tpm":{"endorsementKey":"AToA","endorsementKeyCertificate":"MIIB","endorsementKeyCertificateChain":["MIIB","MIIB","MIIB","MIIB","MIIB"]}}`, "tpm.endorsementKeyCertificateChain", ErrorCodeInvalidJSON},
		{"tpm chain entry empty", `{"tpm":{"endorsementKey":"AToA","endorsementKeyCertificate":"MIIB","endorsementKeyCertificateChain":[""]}}`, "tpm.endorsementKeyCertificateChain[0]", ErrorCodeInvalidJSON},
		{"too large", `{"payload":"` + strings.Repeat("a", MaxRequestBody) + `"}`, "", ErrorCodePayloadTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := DecodeRegisterRequest([]byte(tt.body))
			pe, ok := errors.AsType[*PayloadError](err)
			if !ok {
				t.Fatalf("error = %v, want *PayloadError", err)
			}
			if pe.Field != tt.field || pe.ErrorCode() != tt.code || pe.Msg == "" {
				t.Fatalf("error %q: field %q code %d; want field %q code %d", err, pe.Field, pe.Code, tt.field, tt.code)
			}
		})
	}
}

func FuzzDecodeRegisterRequest(f *testing.F) {
	for _, s := range []string{
		``, ` `, `null`, `{"registrationId":"d1"}`,
		`{"payload": null, "registrationId": "d1"}`,
		`{"registrationId":"d1","payload":"{\"a\":1}"}`,
		`{"tpm":{"endorsementKey":"AToA","storageRootKey":"AToA"}}`,
		`{"payload":{"a":[1,2,{"b":null}]}}`, `[1]`, `{"registrationId":5}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := DecodeRegisterRequest(body)
		if err != nil {
			if _, ok := errors.AsType[*PayloadError](err); !ok {
				t.Fatalf("error of type %T: %v", err, err)
			}
			return
		}
		if bytes.Equal(req.Payload, []byte("null")) {
			t.Fatal("null payload kept")
		}
		out, err := json.Marshal(req)
		if err != nil {
			t.Fatalf("re-encoding %+v: %v", req, err)
		}
		again, err := DecodeRegisterRequest(out)
		if err != nil {
			t.Fatalf("re-decoding %s: %v", out, err)
		}
		if again.RegistrationID != req.RegistrationID || !reflect.DeepEqual(again.TPM, req.TPM) || !sameJSON(t, again.Payload, req.Payload) {
			t.Fatalf("round trip %s -> %s: %+v vs %+v", body, out, req, again)
		}
	})
}

func sameJSON(t *testing.T, a, b json.RawMessage) bool {
	t.Helper()
	if len(a) == 0 || len(b) == 0 {
		return len(a) == len(b)
	}
	var va, vb any
	if err := json.Unmarshal(a, &va); err != nil {
		t.Fatalf("%s: %v", a, err)
	}
	if err := json.Unmarshal(b, &vb); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	return reflect.DeepEqual(va, vb)
}

func fullAssigned() *RegistrationOperationStatus {
	created := time.Date(2020, 4, 10, 3, 11, 13, 27699700, time.UTC)
	updated := time.Date(2020, 4, 10, 3, 11, 16, 0, time.FixedZone("CEST", 2*3600))
	info := &X509CertificateInfo{
		SubjectName:      "CN=dev1",
		SHA1Thumbprint:   "AA11",
		SHA256Thumbprint: "BB22",
		IssuerName:       "CN=Intermediate A",
		NotBeforeUTC:     time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
		NotAfterUTC:      time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC),
		SerialNumber:     "0A",
		Version:          3,
	}
	return &RegistrationOperationStatus{
		OperationID: "4.d0a671905ea5b2c8.e7173b7b-1f2a-4c1e-9d3b-2a8f1c0b9e77",
		Status:      StatusAssigned,
		RegistrationState: &DeviceRegistrationResult{
			RegistrationID:         "dev1",
			CreatedDateTimeUTC:     NewTime(created),
			AssignedHub:            "hub1.example.net",
			DeviceID:               "dev1",
			Status:                 StatusAssigned,
			Substatus:              SubstatusInitialAssignment,
			LastUpdatedDateTimeUTC: NewTime(updated),
			ETag:                   "IjAxMDA0ZjI5LTAwMDAtMDMwMC0wMDAwLTVlOGZmZjk0MDAwMCI=",
			Payload:                json.RawMessage(`{"hub":"hub1"}`),
			X509: &X509RegistrationResult{
				CertificateInfo:        info,
				EnrollmentGroupID:      "groupA",
				SigningCertificateInfo: info,
			},
			TPM:          &TPMRegistrationResult{AuthenticationKey: "AToAAQ=="},
			SymmetricKey: &SymmetricKeyRegistrationResult{EnrollmentGroupID: "sym"},
		},
	}
}

func TestAssignedGolden(t *testing.T) {
	got, err := json.Marshal(fullAssigned())
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join("testdata", "assigned.golden.json")
	if *update {
		if err := os.WriteFile(path, append(got, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, bytes.TrimSpace(want)) {
		t.Fatalf("assigned response changed:\n got %s\nwant %s", got, want)
	}
	// It decodes as a device client reads it.
	back, err := DecodeOperationStatus(got)
	if err != nil {
		t.Fatal(err)
	}
	if !back.RegistrationState.CreatedDateTimeUTC.Equal(fullAssigned().RegistrationState.CreatedDateTimeUTC.Time) {
		t.Fatalf("created time %v", back.RegistrationState.CreatedDateTimeUTC)
	}
}

func TestMinimalResponses(t *testing.T) {
	tests := []struct {
		name string
		v    any
		want string
	}{
		{"assigning", &RegistrationOperationStatus{OperationID: "op1", Status: StatusAssigning}, `{"operationId":"op1","status":"assigning"}`},
		{"failed", &RegistrationOperationStatus{OperationID: "op1", Status: StatusFailed, RegistrationState: &DeviceRegistrationResult{
			RegistrationID: "d1", Status: StatusFailed, ErrorCode: ErrorCodeCustomAllocationFailed, ErrorMessage: "Custom allocation failed with status code: 500"}},
			`{"operationId":"op1","status":"failed","registrationState":{"registrationId":"d1","status":"failed","errorCode":400207,"errorMessage":"Custom allocation failed with status code: 500"}}`},
		{"x509 individual", &DeviceRegistrationResult{RegistrationID: "d", Status: StatusAssigned, X509: &X509RegistrationResult{}}, `{"registrationId":"d","status":"assigned","x509":{}}`},
		{"tpm challenge", &TPMChallenge{AuthenticationKey: "AAE=", KeyName: TPMKeyName}, `{"authenticationKey":"AAE=","keyName":"registration"}`},
		{"error", NewErrorDetails(ErrorCodeUnauthorized, "t-1", "Unauthorized", time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)),
			`{"errorCode":401000,"trackingId":"t-1","message":"Unauthorized","timestampUtc":"2026-01-02T03:04:05.0000000Z"}`},
	}
	for _, tt := range tests {
		got, err := json.Marshal(tt.v)
		if err != nil || string(got) != tt.want {
			t.Errorf("%s: %s, %v\nwant %s", tt.name, got, err, tt.want)
		}
	}
}

func TestProtocolExampleDecodes(t *testing.T) {
	// PROTOCOL.md §3.2, modelled on the embedded C parser test.
	body := `{"operationId":"4.d0a671905ea5b2c8.e7173b7b","status":"assigned","registrationState":{"x509":{},"registrationId":"dev1","createdDateTimeUtc":"2020-04-10T03:11:13.0276997Z","assignedHub":"hub1.example.net","deviceId":"dev1","status":"assigned","substatus":"initialAssignment","lastUpdatedDateTimeUtc":"2020-04-10T03:11:13.2096201+00:00","etag":"IjFhMDAi"}}`
	s, err := DecodeOperationStatus([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	r := s.RegistrationState
	if r.AssignedHub != "hub1.example.net" || r.X509 == nil || r.CreatedDateTimeUTC.Nanosecond() != 27699700 || r.LastUpdatedDateTimeUTC.IsZero() {
		t.Fatalf("decoded %+v", r)
	}
}

func TestDecodeClientBodies(t *testing.T) {
	if _, err := DecodeOperationStatus([]byte(`{"status":"assigning"}`)); err == nil {
		t.Error("assigning without operationId accepted")
	}
	if _, err := DecodeOperationStatus([]byte(`{"operationId":"x","status":"weird"}`)); err == nil {
		t.Error("unknown status accepted")
	}
	e, err := DecodeErrorDetails([]byte(`{"errorCode":401002,"trackingId":"t","message":"Invalid certificate","timestampUtc":"2020-01-01T00:00:00Z"}`))
	if err != nil || e.HTTPStatus() != 401 || !strings.Contains(e.Error(), "401002") {
		t.Errorf("DecodeErrorDetails: %+v, %v", e, err)
	}
	if _, err := DecodeErrorDetails([]byte(`{}`)); err == nil {
		t.Error("error body without code accepted")
	}
	c, err := DecodeTPMChallenge([]byte(`{"authenticationKey":"AAE=","keyName":"registration"}`))
	if err != nil || c.KeyName != TPMKeyName {
		t.Errorf("DecodeTPMChallenge: %+v, %v", c, err)
	}
	if _, err := DecodeTPMChallenge([]byte(`{"errorCode":401000}`)); err == nil {
		t.Error("error body taken for a challenge")
	}
}

func TestErrorCodesBelow429ArePermanent(t *testing.T) {
	for _, c := range []int{ErrorCodeBadTopic, ErrorCodeRegistrationIDMismatch, ErrorCodeBadRequest, ErrorCodeInvalidJSON,
		ErrorCodePayloadTooLarge, ErrorCodeCustomAllocationFailed, ErrorCodeNoHubAssigned, ErrorCodeHubUnauthorized,
		ErrorCodeUnauthorized, ErrorCodeInvalidCertificate, ErrorCodeEnrollmentNotFound, ErrorCodeRegistrationNotFound,
		ErrorCodeOperationNotFound, ErrorCodePreconditionFailed} {
		if s := HTTPStatus(c); s < 400 || s >= 429 {
			t.Errorf("permanent code %d maps to status %d", c, s)
		}
	}
	for _, c := range []int{ErrorCodePollingTooFast, ErrorCodeThrottled} {
		if HTTPStatus(c) != 429 {
			t.Errorf("code %d is not 429", c)
		}
	}
}
