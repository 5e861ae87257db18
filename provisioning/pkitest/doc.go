// Package pkitest builds X.509 hierarchies in code: a root, intermediates
// under it, device and server leaves under those, with an option for every
// defect a verifier must catch (expired, not yet valid, CA leaf, missing
// clientAuth, weak or unusual keys, SHA-1 signatures, path-length and
// name-constraint violations, a signature by the wrong key, unknown critical
// extensions).
//
// Two layers share one implementation:
//
//   - The runtime constructors (NewRootCA, CA.NewIntermediate, CA.NewLeaf,
//     CA.NewServerLeaf, NewSelfSigned, LoadCA) return errors and always
//     generate fresh keys. The broker uses them to create its development PKI
//     on first run. They need only the standard library.
//   - The test wrappers (NewRoot, CA.Intermediate, CA.Leaf, CA.Server,
//     SelfSigned) take a TB (testing.T or testing.B), fail the test on error
//     and draw RSA keys from a small per-process pool, because generating
//     RSA keys is slow.
//
// A typical test:
//
//	root := pkitest.NewRoot(t)
//	factory := root.Intermediate(t, "factory A")
//	dev := factory.Leaf(t, "device-1")
//	expired := factory.Leaf(t, "device-2", pkitest.Expired())
//	// dev.Chain is what the device presents in TLS; root.Cert is the anchor.
//
// Keys made here are for tests and development only.
package pkitest
