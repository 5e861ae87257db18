package bolt

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/dpsbroker/dpsbroker/provisioning"
	"github.com/dpsbroker/dpsbroker/provisioning/wire"
)

// encodeOperation stands in for encoding a provisioning.Operation: what it
// writes must decode to the operation with its result, or GetOperation
// would misread what CommitRegistration wrote.
func TestEncodeOperation(t *testing.T) {
	now := time.Date(2026, 11, 28, 7, 0, 0, 123, time.UTC)
	created := now.Add(-time.Hour)
	info := &wire.X509CertificateInfo{SubjectName: `CN=dev "1" <&>`, SerialNumber: "01", NotBeforeUTC: now, NotAfterUTC: now.Add(time.Hour), Version: 3}
	for _, tc := range []struct {
		name string
		op   provisioning.Operation
	}{
		{"assigned", provisioning.Operation{OperationID: "5.1.2", RegistrationID: "dev-1", Status: provisioning.RegistrationAssigned, Created: now, Expires: now.Add(time.Hour),
			Result: &provisioning.RegistrationState{RegistrationID: "dev-1", DeviceID: "dev-1", Status: provisioning.RegistrationAssigned, AssignedHub: "hub",
				CreatedDateTimeUTC: &created, LastUpdatedDateTimeUTC: &now, ETag: "AQ", CertificateInfo: info, SigningCertInfo: info}}},
		{"failed", provisioning.Operation{OperationID: "5.1.3", RegistrationID: "dev-2", Status: provisioning.RegistrationFailed, Created: now, Expires: now.Add(time.Minute),
			Result: &provisioning.RegistrationState{RegistrationID: "dev-2", Status: provisioning.RegistrationFailed, ErrorCode: 400209, ErrorMessage: "no hub",
				Payload: json.RawMessage(`{"a": [1, 2]}`)}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			result, err := json.Marshal(tc.op.Result)
			if err != nil {
				t.Fatal(err)
			}
			data, err := encodeOperation(&tc.op, result)
			if err != nil {
				t.Fatal(err)
			}
			want, err := json.Marshal(&tc.op)
			if err != nil {
				t.Fatal(err)
			}
			got, err := decode[provisioning.Operation](data)
			if err != nil {
				t.Fatalf("decode %s: %v", data, err)
			}
			exp, err := decode[provisioning.Operation](want)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, exp) {
				t.Errorf("encodeOperation wrote\n%s\nwhich decodes unlike provisioning.Operation's\n%s", data, want)
			}
		})
	}
	// Every field of provisioning.Operation but Result has its counterpart.
	if a, b := reflect.TypeFor[provisioning.Operation]().NumField(), reflect.TypeFor[operationHead]().NumField(); a != b+1 {
		t.Errorf("provisioning.Operation has %d fields, operationHead %d (want one fewer)", a, b)
	}
}

// The record CommitRegistration returns is the one a read returns.
func TestCommitRegistrationReturnsStoredRecord(t *testing.T) {
	s, err := Open(t.TempDir()+"/t.db", Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := t.Context()
	local := time.FixedZone("x", 3600)
	for _, tc := range []struct {
		name string
		c    *provisioning.RegistrationCommit
	}{
		{"x509", commitFor(1, "t", time.Now().Add(time.Hour), provisioning.NewOperationID)},
		{"local times", func() *provisioning.RegistrationCommit {
			c := commitFor(3, "t", time.Now().Add(time.Hour), provisioning.NewOperationID)
			ci := *c.Record.SigningCertInfo
			ci.NotBeforeUTC, ci.NotAfterUTC = ci.NotBeforeUTC.In(local), ci.NotAfterUTC.In(local)
			c.Record.SigningCertInfo = &ci
			return c
		}()},
		{"payload and local times", func() *provisioning.RegistrationCommit {
			c := commitFor(2, "t", time.Now().Add(time.Hour), provisioning.NewOperationID)
			ci := *c.Record.CertificateInfo
			ci.NotBeforeUTC = ci.NotBeforeUTC.In(local)
			c.Record.CertificateInfo = &ci
			c.Record.Payload = json.RawMessage(`{ "k" : "<v>" }`)
			return c
		}()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, _, err := s.CommitRegistration(ctx, tc.c)
			if err != nil {
				t.Fatal(err)
			}
			want, err := s.GetRegistration(ctx, tc.c.Record.RegistrationID)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("CommitRegistration returned\n%+v\nGetRegistration\n%+v", got, want)
			}
			if got.CertificateInfo == tc.c.Record.CertificateInfo || got.SigningCertInfo == tc.c.Record.SigningCertInfo {
				t.Error("the returned record shares certificate info with the argument")
			}
			op, err := s.GetOperation(ctx, tc.c.Operation.OperationID)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(op.Result, want) {
				t.Errorf("operation result\n%+v\nrecord\n%+v", op.Result, want)
			}
		})
	}
}
