package x509attest

import (
	"crypto/sha1" //nolint:gosec // DPS shows SHA-1 thumbprints; never used for trust.
	"crypto/x509"
	"strings"
	"sync"

	"github.com/dpsbroker/dpsbroker/provisioning/wire"
)

// leafInfo is wire.CertificateInfo for the leaf without its repeated work:
// the SHA-256 is the one the decision already computed, and the issuer name
// (shared by every device of a CA) is rendered once. A test keeps the two
// identical.
func (e *Evaluator) leafInfo(c *x509.Certificate, sha256sum [32]byte) *wire.X509CertificateInfo {
	s1 := sha1.Sum(c.Raw) //nolint:gosec // display thumbprint only
	return &wire.X509CertificateInfo{
		SubjectName:      c.Subject.String(),
		SHA1Thumbprint:   upperHex(s1[:]),
		SHA256Thumbprint: upperHex(sha256sum[:]),
		IssuerName:       e.names.get(c.RawIssuer, c.Issuer.String),
		NotBeforeUTC:     c.NotBefore.UTC(),
		NotAfterUTC:      c.NotAfter.UTC(),
		SerialNumber:     strings.ToUpper(c.SerialNumber.Text(16)),
		Version:          c.Version,
	}
}

func upperHex(b []byte) string {
	const digits = "0123456789ABCDEF"
	out := make([]byte, 2*len(b))
	for i, v := range b {
		out[2*i], out[2*i+1] = digits[v>>4], digits[v&0x0f]
	}
	return string(out)
}

// nameCache renders distinguished names once per DER encoding. Bounded by
// emptying: it holds issuer names, of which a fleet has few.
type nameCache struct {
	mu sync.RWMutex
	m  map[string]string
}

const nameCacheSize = 4096

func (n *nameCache) get(raw []byte, render func() string) string {
	n.mu.RLock()
	s, ok := n.m[string(raw)]
	n.mu.RUnlock()
	if ok {
		return s
	}
	s = render()
	n.mu.Lock()
	if n.m == nil || len(n.m) >= nameCacheSize {
		n.m = make(map[string]string)
	}
	n.m[string(raw)] = s
	n.mu.Unlock()
	return s
}
