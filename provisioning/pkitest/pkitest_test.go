package pkitest_test

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"math/big"
	"net"
	"testing"

	"github.com/dpsbroker/dpsbroker/provisioning/pkitest"
)

// verify runs the standard library verifier for a client certificate.
func verify(l *pkitest.Leaf) error {
	inter := x509.NewCertPool()
	for _, c := range l.Chain[1:] {
		inter.AddCert(c)
	}
	roots := x509.NewCertPool()
	roots.AddCert(l.Root)
	_, err := l.Cert.Verify(x509.VerifyOptions{
		Roots: roots, Intermediates: inter,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	return err
}

func TestHierarchyVerifies(t *testing.T) {
	root := pkitest.NewRoot(t)
	a := root.Intermediate(t, "A")
	a2 := a.Intermediate(t, "A2")
	dev := a2.Leaf(t, "device-1")
	if err := verify(dev); err != nil {
		t.Fatalf("verify: %v", err)
	}
	if got := len(dev.Chain); got != 3 {
		t.Fatalf("chain length %d, want leaf + 2 intermediates", got)
	}
	if dev.Chain[1] != a2.Cert || dev.Chain[2] != a.Cert || dev.Root != root.Cert {
		t.Fatal("chain order is not leaf, issuer, issuer's issuer")
	}
	if dev.Cert.Subject.CommonName != "device-1" {
		t.Fatalf("CN %q", dev.Cert.Subject.CommonName)
	}
	if len(root.Chain) != 0 || len(a.Chain) != 1 {
		t.Fatal("CA chains must exclude the root")
	}
}

func TestDefects(t *testing.T) {
	root := pkitest.NewRoot(t)
	ca := root.Intermediate(t, "CA")
	invalid := func(reason x509.InvalidReason) func(error) bool {
		return func(err error) bool {
			var ie x509.CertificateInvalidError
			return errors.As(err, &ie) && ie.Reason == reason
		}
	}
	tests := []struct {
		name  string
		leaf  func() *pkitest.Leaf
		check func(*testing.T, *pkitest.Leaf)
		fails func(error) bool // nil: verify must pass
	}{
		{name: "expired", leaf: func() *pkitest.Leaf { return ca.Leaf(t, "d", pkitest.Expired()) }, fails: invalid(x509.Expired)},
		{name: "not yet valid", leaf: func() *pkitest.Leaf { return ca.Leaf(t, "d", pkitest.NotYetValid()) }, fails: invalid(x509.Expired)},
		{name: "server auth only", leaf: func() *pkitest.Leaf { return ca.Leaf(t, "d", pkitest.ServerAuthOnly()) }, fails: invalid(x509.IncompatibleUsage)},
		{name: "CA leaf", leaf: func() *pkitest.Leaf { return ca.Leaf(t, "d", pkitest.AsCA(true)) },
			check: func(t *testing.T, l *pkitest.Leaf) {
				if !l.Cert.IsCA {
					t.Fatal("not CA:TRUE")
				}
			}},
		{name: "wrong issuer key", leaf: func() *pkitest.Leaf { return ca.Leaf(t, "d", pkitest.SignedByWrongKey()) },
			fails: func(err error) bool { var u x509.UnknownAuthorityError; return errors.As(err, &u) }},
		{name: "sha1", leaf: func() *pkitest.Leaf { return ca.Leaf(t, "d", pkitest.SHA1Signature()) },
			check: func(t *testing.T, l *pkitest.Leaf) {
				if l.Cert.SignatureAlgorithm != x509.ECDSAWithSHA1 {
					t.Fatalf("signature algorithm %v", l.Cert.SignatureAlgorithm)
				}
				var ia x509.InsecureAlgorithmError
				if err := l.Cert.CheckSignatureFrom(ca.Cert); !errors.As(err, &ia) {
					t.Fatalf("CheckSignatureFrom: %v, want InsecureAlgorithmError", err)
				}
			},
			fails: func(err error) bool { return err != nil }},
		{name: "critical extension", leaf: func() *pkitest.Leaf { return ca.Leaf(t, "d", pkitest.UnknownCriticalExtension()) },
			fails: func(err error) bool { var u x509.UnhandledCriticalExtension; return errors.As(err, &u) }},
		{name: "path length", leaf: func() *pkitest.Leaf {
			limited := root.Intermediate(t, "limited", pkitest.MaxPathLen(0))
			return limited.Intermediate(t, "below").Leaf(t, "d")
		}, fails: invalid(x509.TooManyIntermediates)},
		{name: "name constraints", leaf: func() *pkitest.Leaf {
			nc := root.Intermediate(t, "nc", pkitest.PermittedDNSDomains("example.com"))
			return nc.Leaf(t, "d", pkitest.DNSNames("device.example.org"))
		}, fails: invalid(x509.CANotAuthorizedForThisName)},
		{name: "custom serial and SANs", leaf: func() *pkitest.Leaf {
			return ca.Leaf(t, "d", pkitest.Serial(big.NewInt(42)), pkitest.DNSNames("a.example"), pkitest.IPAddresses(net.IPv4(10, 0, 0, 1)))
		}, check: func(t *testing.T, l *pkitest.Leaf) {
			if l.Cert.SerialNumber.Int64() != 42 || l.Cert.DNSNames[0] != "a.example" || !l.Cert.IPAddresses[0].Equal(net.IPv4(10, 0, 0, 1)) {
				t.Fatalf("serial %v SANs %v %v", l.Cert.SerialNumber, l.Cert.DNSNames, l.Cert.IPAddresses)
			}
		}},
		{name: "key usage", leaf: func() *pkitest.Leaf { return ca.Leaf(t, "d", pkitest.KeyUsage(x509.KeyUsageKeyEncipherment)) },
			check: func(t *testing.T, l *pkitest.Leaf) {
				if l.Cert.KeyUsage != x509.KeyUsageKeyEncipherment {
					t.Fatalf("key usage %v", l.Cert.KeyUsage)
				}
			}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l := tc.leaf()
			if tc.check != nil {
				tc.check(t, l)
			}
			err := verify(l)
			switch {
			case tc.fails == nil && err != nil:
				t.Fatalf("verify: %v", err)
			case tc.fails != nil && !tc.fails(err):
				t.Fatalf("verify: %v, not the expected failure", err)
			}
		})
	}
}

func TestKeyAlgorithms(t *testing.T) {
	root := pkitest.NewRoot(t)
	tests := []struct {
		alg  pkitest.KeyAlgorithm
		want func(any) bool
	}{
		{pkitest.ECDSAP256, func(k any) bool { p, ok := k.(*ecdsa.PublicKey); return ok && p.Curve == elliptic.P256() }},
		{pkitest.ECDSAP384, func(k any) bool { p, ok := k.(*ecdsa.PublicKey); return ok && p.Curve == elliptic.P384() }},
		{pkitest.Ed25519, func(k any) bool { _, ok := k.(ed25519.PublicKey); return ok }},
		{pkitest.RSA1024, func(k any) bool { p, ok := k.(*rsa.PublicKey); return ok && p.N.BitLen() == 1024 }},
		{pkitest.RSA2048, func(k any) bool { p, ok := k.(*rsa.PublicKey); return ok && p.N.BitLen() == 2048 }},
	}
	for _, tc := range tests {
		t.Run(tc.alg.String(), func(t *testing.T) {
			l := root.Leaf(t, "d", pkitest.Key(tc.alg))
			if !tc.want(l.Cert.PublicKey) {
				t.Fatalf("public key %T", l.Cert.PublicKey)
			}
			// An RSA issuer signs with SHA-1 too, and a CA of any algorithm
			// issues verifiable leaves.
			sub := root.Intermediate(t, "sub", pkitest.Key(tc.alg))
			if err := verify(sub.Leaf(t, "d")); err != nil {
				t.Fatalf("leaf under %v CA: %v", tc.alg, err)
			}
			if tc.alg == pkitest.RSA2048 {
				s := sub.Leaf(t, "d", pkitest.SHA1Signature())
				if s.Cert.SignatureAlgorithm != x509.SHA1WithRSA {
					t.Fatalf("signature algorithm %v", s.Cert.SignatureAlgorithm)
				}
				if w := sub.Leaf(t, "d", pkitest.SignedByWrongKey()); w.Cert.CheckSignatureFrom(sub.Cert) == nil {
					t.Fatal("wrong-key RSA leaf verifies")
				}
			}
		})
	}
}

func TestSelfSigned(t *testing.T) {
	l := pkitest.SelfSigned(t, "lonely")
	if l.Root != l.Cert || len(l.Chain) != 1 || l.Cert.IsCA {
		t.Fatal("self-signed leaf shape")
	}
	if err := l.Cert.CheckSignatureFrom(l.Cert); err == nil {
		// CheckSignatureFrom requires the parent to be a CA, so a
		// self-signed end entity cannot pass it; the raw signature must.
		t.Fatal("a CA:FALSE self-signed leaf passed CheckSignatureFrom")
	}
	if err := l.Cert.CheckSignature(l.Cert.SignatureAlgorithm, l.Cert.RawTBSCertificate, l.Cert.Signature); err != nil {
		t.Fatalf("self signature: %v", err)
	}
}

func TestPEMRoundTripAndLoadCA(t *testing.T) {
	root, err := pkitest.NewRootCA("dev root")
	if err != nil {
		t.Fatal(err)
	}
	inter, err := root.NewIntermediate("dev intermediate")
	if err != nil {
		t.Fatal(err)
	}
	loaded, err := pkitest.LoadCA(append(inter.CertPEM(), root.CertPEM()...), inter.KeyPEM())
	if err != nil {
		t.Fatalf("LoadCA: %v", err)
	}
	if !loaded.Cert.Equal(inter.Cert) || !loaded.Root().Equal(root.Cert) || len(loaded.Chain) != 1 {
		t.Fatal("loaded CA differs")
	}
	leaf, err := loaded.NewLeaf("device-9")
	if err != nil {
		t.Fatal(err)
	}
	if err := verify(leaf); err != nil {
		t.Fatalf("leaf of loaded CA: %v", err)
	}
	certs, err := pkitest.ParseCertsPEM(leaf.ChainPEM())
	if err != nil || len(certs) != 2 || !certs[0].Equal(leaf.Cert) {
		t.Fatalf("ParseCertsPEM: %v", err)
	}
	if _, err := pkitest.LoadCA(root.CertPEM(), inter.KeyPEM()); err == nil {
		t.Fatal("LoadCA accepted a key of another certificate")
	}
	if _, err := pkitest.LoadCA([]byte("junk"), inter.KeyPEM()); err == nil {
		t.Fatal("LoadCA accepted junk")
	}
}

func TestServerAndClientTLS(t *testing.T) {
	root := pkitest.NewRoot(t)
	srv := root.Server(t)
	dev := root.Intermediate(t, "A").Leaf(t, "device-1")

	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		Certificates: []tls.Certificate{srv.TLSCertificate()},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    root.Pool(),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		done <- c.(*tls.Conn).Handshake()
	}()
	c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{
		RootCAs: root.Pool(), ServerName: "localhost",
		Certificates: []tls.Certificate{dev.TLSCertificate()},
	})
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer c.Close()
	if err := <-done; err != nil {
		t.Fatalf("server handshake: %v", err)
	}
}
