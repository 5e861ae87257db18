package pkitest

import (
	"crypto/rsa"
	"sync"
)

// rsaPoolSize keys per size are generated at most once per process and
// handed out in turn. RSA generation takes up to seconds on a small machine;
// tests only need keys that differ from their neighbours, not fresh ones.
const rsaPoolSize = 4

var rsaPool struct {
	mu   sync.Mutex
	keys map[int][]*rsa.PrivateKey
	next map[int]int
}

// pooledRSAKey returns one of the shared test keys of the given size. Only
// the test wrappers (NewRoot and the CA methods of a CA made by it) use it:
// runtime callers always get fresh keys.
func pooledRSAKey(bits int) (*rsa.PrivateKey, error) {
	rsaPool.mu.Lock()
	defer rsaPool.mu.Unlock()
	if rsaPool.keys == nil {
		rsaPool.keys = make(map[int][]*rsa.PrivateKey)
		rsaPool.next = make(map[int]int)
	}
	i := rsaPool.next[bits] % rsaPoolSize
	rsaPool.next[bits]++
	if i < len(rsaPool.keys[bits]) {
		return rsaPool.keys[bits][i], nil
	}
	k, err := generateRSA(bits)
	if err != nil {
		return nil, err
	}
	rsaPool.keys[bits] = append(rsaPool.keys[bits], k)
	return k, nil
}
