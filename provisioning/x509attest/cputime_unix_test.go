//go:build unix

package x509attest_test

import (
	"syscall"
	"time"
)

// processCPU is the CPU time this process has used (user + system). The
// benchmarks compare CPU time rather than wall time so that their ratios
// hold on a machine shared with other work.
func processCPU() (time.Duration, bool) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, false
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), true
}
