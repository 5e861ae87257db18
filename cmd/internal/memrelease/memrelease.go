// Package memrelease lets an operator, or a benchmark, ask a running
// dpsbroker (or dpsload's baseline broker) to collect its garbage and hand
// the freed pages back to the operating system, by sending it SIGUSR1.
//
// The Go runtime keeps freed pages resident for a while and halves an
// oversized goroutine stack at most once per collection, so the resident
// memory of a long-idle process says more about its collector's last
// cycle than about what it needs. After a release, RSS is close to the
// live heap and stacks: the figure to compare memory per connection by
// (it is how notes/perf-baselines.md measured plain mochi). The release
// costs a few collections' CPU and nothing else; the process serves on.
package memrelease

import (
	"context"
	"log/slog"
	"runtime"
	"runtime/debug"
	"time"
)

// Stats is the memory left after a release.
type Stats struct {
	HeapInuse, StackInuse, HeapReleased uint64
	Collections                         int
	Took                                time.Duration
}

// maxCollections bounds Release: a stack grown to 32 KB by a packet path
// needs two collections to come back to 8 KB.
const maxCollections = 5

// Release collects until goroutine stacks stop shrinking, then returns
// every free page to the operating system.
func Release() Stats {
	start := time.Now()
	var ms runtime.MemStats
	var last uint64
	n := 0
	for n < maxCollections {
		runtime.GC()
		n++
		runtime.ReadMemStats(&ms)
		if n > 1 && ms.StackInuse == last {
			break
		}
		last = ms.StackInuse
	}
	debug.FreeOSMemory()
	runtime.ReadMemStats(&ms)
	return Stats{HeapInuse: ms.HeapInuse, StackInuse: ms.StackInuse, HeapReleased: ms.HeapReleased, Collections: n + 1, Took: time.Since(start)}
}

// Handle releases memory whenever the process receives SIGUSR1, until ctx
// ends, and logs what is left. On systems without SIGUSR1 it does nothing.
func Handle(ctx context.Context, log *slog.Logger) {
	sig := notify()
	if sig == nil {
		return
	}
	go func() {
		defer stop(sig)
		for {
			select {
			case <-ctx.Done():
				return
			case <-sig:
				s := Release()
				log.Info("memory released to the OS (SIGUSR1)",
					"heap_inuse_bytes", s.HeapInuse, "stack_inuse_bytes", s.StackInuse,
					"collections", s.Collections, "took", s.Took.Round(time.Millisecond))
			}
		}
	}()
}
