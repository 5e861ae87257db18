// Package tpmsim opens the go-tpm-tools TPM simulator (the Microsoft
// reference TPM, built with cgo) for tests of TPM devices. It lives apart
// from clients/tpm so that only tests pay for the C build.
//
// The simulator is one per process: Open blocks until the previous one is
// closed, so tests that use it run one after another.
package tpmsim

import (
	"fmt"

	"github.com/google/go-tpm-tools/simulator"
	"github.com/google/go-tpm/tpm2/transport"
)

// Open starts a simulator with a random seed: a new TPM with new
// endorsement and storage keys.
func Open() (transport.TPMCloser, error) {
	sim, err := simulator.Get()
	if err != nil {
		return nil, fmt.Errorf("tpmsim: %w", err)
	}
	return transport.FromReadWriteCloser(sim), nil
}

// OpenWithSeed starts a simulator whose primary seeds derive from seed, so
// that its EK and SRK are the same in every run (for fixtures such as an
// enrollment seeded into a store). Never use it outside tests: anyone who
// knows the seed knows the keys.
func OpenWithSeed(seed int64) (transport.TPMCloser, error) {
	sim, err := simulator.GetWithFixedSeedInsecure(seed)
	if err != nil {
		return nil, fmt.Errorf("tpmsim: %w", err)
	}
	return transport.FromReadWriteCloser(sim), nil
}
