package pkitest_test

import (
	"crypto/tls"
	"fmt"

	"github.com/dpsbroker/dpsbroker/provisioning/pkitest"
)

// The runtime constructors return errors; tests use the TB wrappers
// (pkitest.NewRoot(t), ca.Intermediate(t, ...), ca.Leaf(t, ...)) instead.
func Example() {
	root, err := pkitest.NewRootCA("dev root")
	if err != nil {
		fmt.Println(err)
		return
	}
	factory, _ := root.NewIntermediate("factory A")
	device, _ := factory.NewLeaf("device-1")
	broken, _ := factory.NewLeaf("device-2", pkitest.Expired(), pkitest.SHA1Signature())
	server, _ := root.NewServerLeaf(nil) // localhost, 127.0.0.1, ::1

	fmt.Println(device.Cert.Subject.CommonName, "presents", len(device.Chain), "certificates")
	fmt.Println(broken.Cert.SignatureAlgorithm)
	fmt.Println(server.Cert.DNSNames, server.Cert.IPAddresses)
	_ = tls.Config{Certificates: []tls.Certificate{server.TLSCertificate()}, ClientCAs: root.Pool()}
	// Output:
	// device-1 presents 2 certificates
	// ECDSA-SHA1
	// [localhost] [127.0.0.1 ::1]
}
