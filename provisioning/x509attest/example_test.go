package x509attest_test

import (
	"context"
	"crypto/x509"
	"fmt"

	"github.com/dpsbroker/dpsbroker/provisioning/pkitest"
	"github.com/dpsbroker/dpsbroker/provisioning/x509attest"
)

// The seed story in miniature: a group on the root admits every device
// until a disabled group on intermediate B takes B's devices out.
func Example() {
	root, _ := pkitest.NewRootCA("root")
	a, _ := root.NewIntermediate("A")
	b, _ := root.NewIntermediate("B")
	dev1, _ := a.NewLeaf("device-1")
	dev4, _ := b.NewLeaf("device-4")

	store := newFake().putGroup(x509Group("all", root.Cert, true)) // any Enrollments, e.g. a provisioning.Store
	e := x509attest.New(store, x509attest.Options{})

	show := func() {
		for _, chain := range [][]*x509.Certificate{dev1.Chain, dev4.Chain} {
			d, err := e.Decide(context.Background(), chain) // chain as presented in TLS
			if err != nil {
				fmt.Println("store unavailable, refusing:", err)
				return
			}
			fmt.Printf("%s: %s by group %q", d.RegistrationID, d.Outcome, d.Group.EnrollmentGroupID)
			if d.Outcome == x509attest.Refuse {
				fmt.Printf(" (%s)", d.Reason) // d.Explanation says which certificate and why
			}
			fmt.Println()
		}
	}
	show()
	store.putGroup(x509Group("b-compromised", b.Cert, false))
	show()
	// Output:
	// device-1: provision by group "all"
	// device-4: provision by group "all"
	// device-1: provision by group "all"
	// device-4: refuse by group "b-compromised" (groupDisabled)
}
