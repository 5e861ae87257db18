//go:build !unix

package x509attest_test

import "time"

// processCPU is unavailable here; the benchmarks fall back to wall time.
func processCPU() (time.Duration, bool) { return 0, false }
