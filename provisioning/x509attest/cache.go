package x509attest

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"strings"
	"sync"

	"github.com/dpsbroker/dpsbroker/provisioning/wire"
)

// pairKey names an ordered pair of certificates by their SHA-256: a child
// and the parent that signed it, or a leaf and the anchor of its chain.
type pairKey struct {
	child, parent [32]byte
}

const shardCount = 16

// pairSet is a bounded, concurrency-safe set of pairKeys. Each shard evicts
// its oldest entry when full (FIFO): the set holds pure facts ("this
// signature verified"), so losing one costs a verification, never a wrong
// answer.
type pairSet struct {
	shards [shardCount]pairShard
}

type pairShard struct {
	mu    sync.RWMutex
	m     map[pairKey]struct{}
	ring  []pairKey // insertion order, grows up to limit and then wraps
	next  int
	limit int
}

func newPairSet(size int) *pairSet {
	per := max(1, (size+shardCount-1)/shardCount)
	s := &pairSet{}
	for i := range s.shards {
		s.shards[i].m = make(map[pairKey]struct{})
		s.shards[i].limit = per
	}
	return s
}

func (s *pairSet) shard(k pairKey) *pairShard {
	// SHA-256 output is uniform, so one byte spreads keys evenly.
	return &s.shards[k.child[0]%shardCount]
}

func (s *pairSet) has(k pairKey) bool {
	sh := s.shard(k)
	sh.mu.RLock()
	_, ok := sh.m[k]
	sh.mu.RUnlock()
	return ok
}

func (s *pairSet) add(k pairKey) {
	sh := s.shard(k)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if _, ok := sh.m[k]; ok {
		return
	}
	if len(sh.ring) < sh.limit {
		sh.ring = append(sh.ring, k)
	} else {
		delete(sh.m, sh.ring[sh.next])
		sh.ring[sh.next] = k
		sh.next = (sh.next + 1) % len(sh.ring)
	}
	sh.m[k] = struct{}{}
}

// parsedCert is an enrolled certificate parsed once, with what the decision
// needs from it.
type parsedCert struct {
	cert *x509.Certificate
	hash [32]byte
	info *wire.X509CertificateInfo
	err  error // why the text is unusable; cert is nil then
}

// parseCache maps the certificate text of an enrollment (PEM or base64 DER)
// to its parsed form, so that a new group snapshot or a CA reference costs
// a map lookup, not a parse. Texts are immutable facts, so entries never go
// stale; the map is simply emptied when it reaches its bound.
type parseCache struct {
	mu  sync.Mutex
	m   map[string]*parsedCert
	max int
}

func newParseCache(max int) *parseCache {
	return &parseCache{m: make(map[string]*parsedCert), max: max}
}

// get returns the parsed certificate and whether it was parsed by this call
// (so that a problem is logged once, not on every decision).
func (c *parseCache) get(text string) (pc *parsedCert, fresh bool) {
	c.mu.Lock()
	pc, ok := c.m[text]
	c.mu.Unlock()
	if ok {
		return pc, false
	}
	pc = parseEnrolled(text)
	c.mu.Lock()
	if len(c.m) >= c.max {
		clear(c.m)
	}
	c.m[text] = pc
	c.mu.Unlock()
	return pc, true
}

func parseEnrolled(text string) *parsedCert {
	der, err := decodeCertificate(text)
	if err != nil {
		return &parsedCert{err: err}
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return &parsedCert{err: err}
	}
	return &parsedCert{cert: cert, hash: sha256.Sum256(der), info: wire.CertificateInfo(cert)}
}

// decodeCertificate accepts what DPS accepts in an enrollment: a PEM
// CERTIFICATE block or the base64 of the DER.
func decodeCertificate(text string) ([]byte, error) {
	text = strings.TrimSpace(text)
	if text == "" {
		return nil, errors.New("empty certificate")
	}
	if strings.HasPrefix(text, "-----BEGIN") {
		rest := []byte(text)
		for {
			var b *pem.Block
			b, rest = pem.Decode(rest)
			if b == nil {
				return nil, errors.New("no PEM CERTIFICATE block")
			}
			if b.Type == "CERTIFICATE" {
				return b.Bytes, nil
			}
		}
	}
	compact := strings.Map(func(r rune) rune {
		if r == ' ' || r == '\n' || r == '\r' || r == '\t' {
			return -1
		}
		return r
	}, text)
	der, err := base64.StdEncoding.DecodeString(compact)
	if err != nil {
		return nil, errors.New("certificate is neither PEM nor base64 DER")
	}
	return der, nil
}
