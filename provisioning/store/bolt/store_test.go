package bolt

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/dpsbroker/dpsbroker/provisioning"
	"github.com/dpsbroker/dpsbroker/provisioning/store/storetest"
	bolt "go.etcd.io/bbolt"
)

func openTest(t *testing.T, path string, opts Options) *Store {
	t.Helper()
	s, err := Open(path, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) provisioning.Store {
		return openTest(t, filepath.Join(t.TempDir(), "dps.db"), Options{})
	})
}

func TestReopenKeepsEverything(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "dps.db")
	ca := storetest.NewCACertificate(t, "durable-ca")

	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	e, err := s.PutEnrollment(ctx, &provisioning.IndividualEnrollment{RegistrationID: "Dev-1", DeviceID: "d1"}, "")
	if err != nil {
		t.Fatal(err)
	}
	g := &provisioning.EnrollmentGroup{
		EnrollmentGroupID: "grp",
		Attestation: provisioning.AttestationMechanism{Type: provisioning.AttestationX509, X509: &provisioning.X509Attestation{
			SigningCertificates: &provisioning.X509Certificates{Primary: &provisioning.X509CertificateWithInfo{Certificate: ca.PEM}},
		}},
	}
	if _, err := s.PutEnrollmentGroup(ctx, g, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutCACertificate(ctx, &provisioning.CACertificate{Name: "root", Certificate: ca.Base64}, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutRegistration(ctx, &provisioning.RegistrationState{RegistrationID: "dev-1", EnrollmentGroupID: "grp", Status: provisioning.RegistrationAssigned}, ""); err != nil {
		t.Fatal(err)
	}
	if err := s.PutOperation(ctx, &provisioning.Operation{OperationID: "op", Status: provisioning.RegistrationAssigning, Expires: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if err := s.PutChallenge(ctx, "nonce", []byte("n"), time.Hour); err != nil {
		t.Fatal(err)
	}
	id, err := s.AppendEvent(ctx, &provisioning.Event{Type: provisioning.EventAssigned, RegistrationID: "dev-1"})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openTest(t, path, Options{})
	if got, err := s.GetEnrollment(ctx, "dev-1"); err != nil || got.ETag != e.ETag || got.DeviceID != "d1" {
		t.Errorf("enrollment after reopen: %+v, %v", got, err)
	}
	if got, err := s.GroupsByCertificate(ctx, ca.SHA256); err != nil || len(got) != 1 || got[0].EnrollmentGroupID != "grp" {
		t.Errorf("GroupsByCertificate after reopen: %v, %v", got, err)
	}
	if got, err := s.GetCACertificate(ctx, "ROOT"); err != nil || got.Certificate != ca.Base64 {
		t.Errorf("CA after reopen: %v", err)
	}
	if got, _, err := s.ListRegistrations(ctx, "grp", "", 10); err != nil || len(got) != 1 {
		t.Errorf("registrations after reopen: %d, %v", len(got), err)
	}
	if _, err := s.GetOperation(ctx, "op"); err != nil {
		t.Errorf("operation after reopen: %v", err)
	}
	if v, err := s.TakeChallenge(ctx, "nonce"); err != nil || string(v) != "n" {
		t.Errorf("challenge after reopen: %q, %v", v, err)
	}
	if evs, err := s.ReadEvents(ctx, "", 10); err != nil || len(evs) != 1 || evs[0].ID != id {
		t.Errorf("events after reopen: %v, %v", evs, err)
	}
	// Etags keep growing across restarts: never reuse one.
	e2, err := s.PutEnrollment(ctx, &provisioning.IndividualEnrollment{RegistrationID: "dev-2"}, "")
	if err != nil || e2.ETag == e.ETag {
		t.Errorf("etag after reopen: %q (first %q), %v", e2.ETag, e.ETag, err)
	}
	id2, err := s.AppendEvent(ctx, &provisioning.Event{Type: provisioning.EventAssigned})
	if err != nil || id2 == id {
		t.Errorf("event ID after reopen: %q (first %q), %v", id2, id, err)
	}
}

func TestOpenLockHeld(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dps.db")
	openTest(t, path, Options{})
	_, err := Open(path, Options{Timeout: 100 * time.Millisecond})
	if !errors.Is(err, ErrInUse) {
		t.Fatalf("second Open: err = %v, want ErrInUse", err)
	}
}

func TestClosedStoreFailsClosed(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "dps.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	ch := s.WatchChanges(context.Background())
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, ok := <-ch; ok {
		t.Errorf("watch channel still open after Close")
	}
	if _, err := s.GetEnrollment(context.Background(), "x"); !errors.Is(err, provisioning.ErrStoreUnavailable) {
		t.Errorf("Get after Close: err = %v, want ErrStoreUnavailable", err)
	}
	if _, err := s.PutEnrollment(context.Background(), &provisioning.IndividualEnrollment{RegistrationID: "x"}, ""); !errors.Is(err, provisioning.ErrStoreUnavailable) {
		t.Errorf("Put after Close: err = %v, want ErrStoreUnavailable", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestEventRetention(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, filepath.Join(t.TempDir(), "dps.db"), Options{MaxEvents: 3})
	var ids []string
	for i := range 7 {
		id, err := s.AppendEvent(ctx, &provisioning.Event{Type: provisioning.EventAssigned, RegistrationID: fmt.Sprint("d", i)})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	evs, err := s.ReadEvents(ctx, "", 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 3 || evs[0].ID != ids[4] || evs[2].ID != ids[6] {
		t.Errorf("kept %d events starting at %v, want the newest 3 (%v)", len(evs), evs, ids[4:])
	}
	// Reading after a trimmed ID starts at the oldest kept.
	if evs, err := s.ReadEvents(ctx, ids[0], 100); err != nil || len(evs) != 3 {
		t.Errorf("after trimmed ID: %d, %v", len(evs), err)
	}
}

func TestSweeperDeletesExpired(t *testing.T) {
	ctx := context.Background()
	now := time.Now()
	clock := func() time.Time { return now }
	s := openTest(t, filepath.Join(t.TempDir(), "dps.db"), Options{Now: clock, sweepInterval: time.Hour})
	for i := range 5 {
		if err := s.PutOperation(ctx, &provisioning.Operation{OperationID: fmt.Sprint("op-", i), Expires: now.Add(time.Duration(i) * time.Minute)}); err != nil {
			t.Fatal(err)
		}
		if err := s.PutChallenge(ctx, fmt.Sprint("c-", i), []byte("v"), time.Duration(i+1)*time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	// Replacing an operation moves its expiry.
	if err := s.PutOperation(ctx, &provisioning.Operation{OperationID: "op-1", Expires: now.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	now = now.Add(150 * time.Second) // past op-0, op-2 and c-0, c-1
	n, err := s.sweep(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n != 4 {
		t.Errorf("swept %d entries, want 4", n)
	}
	counts := map[string]int{}
	if err := s.db.View(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketOperations, bucketChallenges, bucketExpiry} {
			counts[string(b)] = tx.Bucket(b).Stats().KeyN
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if counts["operations"] != 3 || counts["challenges"] != 3 || counts["expiry"] != 6 {
		t.Errorf("after sweep: %v, want 3 operations, 3 challenges, 6 expiry keys", counts)
	}
	if _, err := s.GetOperation(ctx, "op-1"); err != nil {
		t.Errorf("op-1 (moved expiry): %v", err)
	}
}

func TestSlowWatcherGetsChangeAll(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := openTest(t, filepath.Join(t.TempDir(), "dps.db"), Options{watchBuffer: 4})
	ch := s.WatchChanges(ctx)
	// Nobody reads while 50 writes go through: none of them may block.
	for i := range 50 {
		if _, err := s.PutEnrollment(ctx, &provisioning.IndividualEnrollment{RegistrationID: fmt.Sprint("d-", i)}, ""); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.PutEnrollment(ctx, &provisioning.IndividualEnrollment{RegistrationID: "after"}, ""); err != nil {
		t.Fatal(err)
	}
	sawAll := false
	timeout := time.After(5 * time.Second)
	for {
		select {
		case c := <-ch:
			if c.Kind == provisioning.ChangeAll {
				sawAll = true
			}
			if c.ID == "after" || (sawAll && c.Kind == provisioning.ChangeAll) {
				if !sawAll {
					t.Fatal("watcher fell behind but got no ChangeAll")
				}
				return
			}
		case <-timeout:
			t.Fatalf("no ChangeAll (sawAll=%v)", sawAll)
		}
	}
}
