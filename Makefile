# Benchmarks: see cmd/dpsbench and BENCHMARKS.md.

QUICK_OUT ?= $(or $(TMPDIR),/tmp)/dpsbench-quick

.PHONY: bench bench-quick

# The full plan (<= 35 minutes on 2 cores; about 28): regenerates BENCHMARKS.md and
# its plots in testdata/bench/.
bench:
	go run ./cmd/dpsbench -out BENCHMARKS.md -plots testdata/bench

# A ~3-5 minute run of the same plan with fewer rounds and a smaller
# fleet, written outside the repository so it never replaces the full
# report.
bench-quick:
	mkdir -p $(QUICK_OUT)
	go run ./cmd/dpsbench -quick -out $(QUICK_OUT)/BENCHMARKS.md -plots $(QUICK_OUT)
