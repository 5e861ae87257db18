// Package stats holds the summary statistics the load generator
// (cmd/dpsload) and the benchmark runner (cmd/dpsbench) both report, so
// that a figure means the same in a dpsload result and in BENCHMARKS.md.
package stats

import "slices"

// Median is the middle value of v (the mean of the two middle ones for an
// even count), 0 for none. v is not reordered.
func Median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
