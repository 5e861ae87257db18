package pkitest

// TB is the part of testing.TB the wrappers use. Declaring it here keeps
// the package free of the testing import, so the broker can link the
// runtime constructors without it; *testing.T and *testing.B satisfy it.
type TB interface {
	Helper()
	Fatalf(format string, args ...any)
}

// NewRoot creates a root CA for a test (CN "pkitest root <random>" unless a
// Subject option names it) and fails the test on error. CAs made from it
// draw RSA keys from a shared pool, so RSA tests stay fast.
func NewRoot(tb TB, opts ...Option) *CA {
	tb.Helper()
	ca, err := newRoot(uniqueName("pkitest root"), true, opts)
	if err != nil {
		tb.Fatalf("%v", err)
	}
	return ca
}

// Intermediate issues a subordinate CA named name (its subject CN) under c
// and fails the test on error.
func (c *CA) Intermediate(tb TB, name string, opts ...Option) *CA {
	tb.Helper()
	ca, err := c.NewIntermediate(name, opts...)
	if err != nil {
		tb.Fatalf("%v", err)
	}
	return ca
}

// Leaf issues a device certificate with subject CN cn (the registration
// ID) and fails the test on error.
func (c *CA) Leaf(tb TB, cn string, opts ...Option) *Leaf {
	tb.Helper()
	l, err := c.NewLeaf(cn, opts...)
	if err != nil {
		tb.Fatalf("%v", err)
	}
	return l
}

// Server issues a TLS server certificate for hosts (default localhost,
// 127.0.0.1 and ::1) and fails the test on error.
func (c *CA) Server(tb TB, hosts ...string) *Leaf {
	tb.Helper()
	l, err := c.NewServerLeaf(hosts)
	if err != nil {
		tb.Fatalf("%v", err)
	}
	return l
}

// SelfSigned creates a self-signed device certificate with subject CN cn
// and fails the test on error.
func SelfSigned(tb TB, cn string, opts ...Option) *Leaf {
	tb.Helper()
	l, err := newSelfSigned(cn, true, opts)
	if err != nil {
		tb.Fatalf("%v", err)
	}
	return l
}
