package storetest

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/dpsbroker/dpsbroker/provisioning"
)

// pager adapts ListEnrollments and ListRegistrations to one paging test.
type pager func(t *testing.T, s provisioning.Store, cursor string, limit int) (ids []string, next string, err error)

func listEnrollmentIDs(t *testing.T, s provisioning.Store, cursor string, limit int) ([]string, string, error) {
	page, next, err := s.ListEnrollments(ctxT(t), cursor, limit)
	ids := make([]string, len(page))
	for i, e := range page {
		ids[i] = e.RegistrationID
	}
	return ids, next, err
}

func listRegistrationIDs(groupID string) pager {
	return func(t *testing.T, s provisioning.Store, cursor string, limit int) ([]string, string, error) {
		page, next, err := s.ListRegistrations(ctxT(t), groupID, cursor, limit)
		ids := make([]string, len(page))
		for i, r := range page {
			ids[i] = r.RegistrationID
		}
		return ids, next, err
	}
}

// pageAll walks every page and checks the page-size and next rules.
func pageAll(t *testing.T, s provisioning.Store, list pager, limit int) []string {
	t.Helper()
	var all []string
	cursor := ""
	for range 1000 {
		ids, next, err := list(t, s, cursor, limit)
		if err != nil {
			t.Fatalf("list after %q limit %d: %v", cursor, limit, err)
		}
		if len(ids) > limit {
			t.Fatalf("page of %d, limit %d", len(ids), limit)
		}
		all = append(all, ids...)
		if next == "" {
			return all
		}
		if len(ids) != limit {
			t.Fatalf("short page (%d of %d) with next %q: only the last page may be short", len(ids), limit, next)
		}
		cursor = next
	}
	t.Fatalf("paging did not end")
	return nil
}

func runListing(t *testing.T, newStore func(t *testing.T) provisioning.Store) {
	// Mixed case to check the order is by the lower-cased key.
	ids := []string{"dev-05", "Dev-01", "dev-03", "DEV-07", "dev-02", "Dev-06", "dev-04"}
	sorted := slices.Clone(ids)
	slices.SortFunc(sorted, func(a, b string) int { return strings.Compare(strings.ToLower(a), strings.ToLower(b)) })

	t.Run("Enrollments", func(t *testing.T) {
		s := newStore(t)
		checkPaging(t, s, listEnrollmentIDs, sorted, func(id string) error {
			_, err := s.PutEnrollment(ctxT(t), testEnrollment(id, "d"), "")
			return err
		})
	})
	t.Run("Registrations", func(t *testing.T) {
		s := newStore(t)
		checkPaging(t, s, listRegistrationIDs(""), sorted, func(id string) error {
			_, err := s.PutRegistration(ctxT(t), testRegistration(id, "", "hub"), "")
			return err
		})
	})
	t.Run("RegistrationsByGroup", func(t *testing.T) {
		s, ctx := newStore(t), ctxT(t)
		var inA, inB []string
		for i := range 11 {
			id := fmt.Sprintf("r-%02d", i)
			group := "Group-A"
			if i%3 == 0 {
				group = "group-b"
				inB = append(inB, id)
			} else {
				inA = append(inA, id)
			}
			if i == 10 {
				group = "" // admitted by an individual enrollment
				inA = inA[:len(inA)-1]
			}
			if _, err := s.PutRegistration(ctx, testRegistration(id, group, "hub"), ""); err != nil {
				t.Fatal(err)
			}
		}
		for _, limit := range []int{1, 2, 3, len(inA), len(inA) + 1, 100} {
			if got := pageAll(t, s, listRegistrationIDs("group-a"), limit); !slices.Equal(got, inA) {
				t.Errorf("group-a limit %d: %v, want %v", limit, got, inA)
			}
			if got := pageAll(t, s, listRegistrationIDs("GROUP-B"), limit); !slices.Equal(got, inB) {
				t.Errorf("GROUP-B limit %d: %v, want %v", limit, got, inB)
			}
		}
		// A page of exactly the matching records is the last one.
		page, next, err := s.ListRegistrations(ctx, "group-b", "", len(inB))
		if err != nil || len(page) != len(inB) || next != "" {
			t.Errorf("exact page for group-b: %d records, next %q, %v; want %d, \"\"", len(page), next, err, len(inB))
		}
		if got := pageAll(t, s, listRegistrationIDs("no-such-group"), 5); len(got) != 0 {
			t.Errorf("unknown group: %v", got)
		}
		// Moving a record to another group moves it in the filter.
		if _, err := s.PutRegistration(ctx, testRegistration(inB[0], "group-a", "hub"), ""); err != nil {
			t.Fatal(err)
		}
		if got := pageAll(t, s, listRegistrationIDs("group-b"), 5); slices.Contains(got, inB[0]) {
			t.Errorf("record still listed under its old group: %v", got)
		}
		if got := pageAll(t, s, listRegistrationIDs("group-a"), 5); !slices.Contains(got, inB[0]) {
			t.Errorf("record not listed under its new group: %v", got)
		}
		if err := s.DeleteRegistration(ctx, inA[0], ""); err != nil {
			t.Fatal(err)
		}
		if got := pageAll(t, s, listRegistrationIDs("group-a"), 5); slices.Contains(got, inA[0]) {
			t.Errorf("deleted record still listed: %v", got)
		}
	})
}

// checkPaging fills the store with ids through put and checks every paging
// rule against the expected order.
func checkPaging(t *testing.T, s provisioning.Store, list pager, sorted []string, put func(id string) error) {
	t.Helper()
	ids, next, err := list(t, s, "", 10)
	if err != nil || len(ids) != 0 || next != "" {
		t.Fatalf("empty store: %v, next %q, %v; want no entries, next \"\"", ids, next, err)
	}
	for _, limit := range []int{0, -1} {
		if _, _, err := list(t, s, "", limit); err == nil {
			t.Errorf("limit %d: no error", limit)
		}
	}
	// Insert out of order.
	for _, i := range []int{3, 0, 6, 1, 5, 2, 4} {
		if err := put(sorted[i]); err != nil {
			t.Fatal(err)
		}
	}
	for _, limit := range []int{1, 2, 3, len(sorted), len(sorted) + 1, 1000} {
		if got := pageAll(t, s, list, limit); !slices.Equal(got, sorted) {
			t.Errorf("limit %d: %v, want %v", limit, got, sorted)
		}
	}
	// A page of exactly limit entries at the end has no next.
	ids, next, err = list(t, s, "", len(sorted))
	if err != nil || len(ids) != len(sorted) || next != "" {
		t.Errorf("exact page: %d entries, next %q, %v; want %d, \"\"", len(ids), next, err, len(sorted))
	}
	// The first page of several has a next that continues after it.
	ids, next, err = list(t, s, "", 2)
	if err != nil || !slices.Equal(ids, sorted[:2]) || next == "" {
		t.Fatalf("first page: %v, next %q, %v", ids, next, err)
	}
	rest, _, err := list(t, s, next, 100)
	if err != nil || !slices.Equal(rest, sorted[2:]) {
		t.Errorf("after first page: %v, %v; want %v", rest, err, sorted[2:])
	}
}
