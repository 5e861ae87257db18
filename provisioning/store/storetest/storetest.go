// Package storetest is the conformance suite that every provisioning.Store
// implementation passes (the embedded bbolt store and the Redis store).
//
// Beyond the conventions documented on the interfaces in provisioning, the
// suite pins down these decisions, which both stores implement:
//
//   - Keys: registration IDs, enrollment group IDs and CA certificate names
//     are all case-insensitive and keyed by provisioning.RegistrationKey
//     (lower case); Change.ID carries that key. Returned entries keep the ID
//     as it was written.
//   - Put does not modify its argument; it stores a copy and returns another.
//     Get returns a fresh copy each time, so callers may modify it.
//   - Delete with a non-empty ifMatch on a missing entry returns
//     ErrPreconditionFailed, exactly like Put ("same ifMatch rules").
//   - Listing: cursors are opaque; next is "" exactly when the page is the
//     last one, so a store looks one entry ahead; limit <= 0 is an error.
//     A filtered ListRegistrations counts only matching records.
//   - Certificates: a certificate field holds PEM or standard base64 DER; a
//     thumbprint is SHA-256 of the DER. A group or CA certificate whose
//     certificate does not decode is refused by Put with an error (the store
//     cannot index it, and failing closed beats an entry that never
//     matches).
//   - GroupsByCertificate joins inside the store: a group matches through
//     its signing certificates (primary, secondary) and through its CA
//     references, which name CACertificate entries whose certificate has the
//     thumbprint. The join is evaluated against the current CA entries, so
//     uploading, replacing or deleting a CA certificate changes the result
//     without rewriting the group. The store does not filter on
//     CACertificate.IsVerified: that is the service's decision. No match is
//     an empty result, not ErrNotFound.
//   - Operations and challenges with a zero expiry or a non-positive TTL are
//     refused; after expiry they read as ErrNotFound (the suite waits for
//     expiry by polling and never asserts how fast it happens).
//   - ReadEvents with limit <= 0 or an afterID the log never issued (not
//     parseable) is an error.
//   - WatchChanges: a change made after WatchChanges returns is delivered
//     (the store subscribes before returning); every write and delete of an
//     enrollment, group or CA certificate produces a Change, also when it
//     was made by this process. Read-your-writes holds for
//     ListEnrollmentGroups and GroupsByCertificate in the writing process.
//   - CommitRegistration is atomic: on a failed precondition neither the
//     record, nor the operation, nor the event is written; the stored
//     operation's Result is the stored record (same etag and timestamps).
//   - A cancelled context makes Get and Put fail with an error wrapping
//     context.Canceled.
//   - Nothing panics on a nil entry or an empty ID; both are errors.
package storetest

import (
	"testing"

	"github.com/dpsbroker/dpsbroker/provisioning"
)

// Run runs the whole suite. newStore returns a fresh, empty store for one
// subtest (the caller registers cleanup with t.Cleanup).
func Run(t *testing.T, newStore func(t *testing.T) provisioning.Store) {
	t.Helper()
	suites := []struct {
		name string
		run  func(t *testing.T, newStore func(t *testing.T) provisioning.Store)
	}{
		{"CRUD", runCRUD},
		{"Copies", runCopies},
		{"BadInput", runBadInput},
		{"Listing", runListing},
		{"GroupSnapshot", runGroupSnapshot},
		{"GroupsByCertificate", runGroupsByCertificate},
		{"Operations", runOperations},
		{"Events", runEvents},
		{"Challenges", runChallenges},
		{"Watch", runWatch},
		{"Commit", runCommit},
	}
	for _, s := range suites {
		t.Run(s.name, func(t *testing.T) { s.run(t, newStore) })
	}
}
