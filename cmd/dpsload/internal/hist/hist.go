// Package hist is a small log-linear latency histogram in the style of HDR
// Histogram: values below 2^SubBits are exact, and every power of two above
// is split into 2^(SubBits-1) equal buckets, so the relative error of any
// reported value is below 2^-(SubBits-1) (0.8 % with the default 8 bits)
// while the whole uint64 range fits in a few thousand counters.
//
// A Histogram is not safe for concurrent use; callers that record from
// several goroutines guard it or merge per-goroutine histograms.
package hist

import (
	"math"
	"math/bits"
	"time"
)

// SubBits sets the precision: 2^(SubBits-1) buckets per power of two.
const SubBits = 8

const (
	sub      = 1 << (SubBits - 1) // buckets per power of two
	nBuckets = (64 - SubBits + 2) * sub
)

// Histogram counts non-negative durations with bounded relative error.
type Histogram struct {
	counts [nBuckets]uint64
	n      uint64
	sum    float64 // nanoseconds; float so it cannot overflow on long runs
	min    uint64
	max    uint64
}

// New returns an empty histogram.
func New() *Histogram { return &Histogram{} }

// index maps a value to its bucket. Values below 2*sub map to themselves;
// above, the top SubBits bits of the value select the bucket, so the
// buckets of each power of two are equally wide.
func index(v uint64) int {
	if v < 2*sub {
		return int(v)
	}
	shift := bits.Len64(v) - SubBits // >= 1 here
	return shift*sub + int(v>>uint(shift))
}

// bounds returns the smallest and largest value that map to bucket i.
func bounds(i int) (lo, hi uint64) {
	if i < 2*sub {
		return uint64(i), uint64(i)
	}
	shift := i/sub - 1
	m := uint64(i - shift*sub)
	lo = m << uint(shift)
	return lo, lo + (1 << uint(shift)) - 1
}

// Record adds one duration; negative durations count as zero.
func (h *Histogram) Record(d time.Duration) { h.RecordValue(uint64(max(d, 0))) }

// RecordValue adds one raw value (nanoseconds when used through Record).
func (h *Histogram) RecordValue(v uint64) {
	h.counts[index(v)]++
	if h.n == 0 || v < h.min {
		h.min = v
	}
	if v > h.max {
		h.max = v
	}
	h.n++
	h.sum += float64(v)
}

// Count is the number of recorded values.
func (h *Histogram) Count() uint64 { return h.n }

// Min is the smallest recorded value (0 when empty).
func (h *Histogram) Min() time.Duration { return toDuration(h.min) }

// Max is the largest recorded value (0 when empty).
func (h *Histogram) Max() time.Duration { return toDuration(h.max) }

// Mean is the exact mean of the recorded values (0 when empty).
func (h *Histogram) Mean() time.Duration {
	if h.n == 0 {
		return 0
	}
	return time.Duration(h.sum / float64(h.n))
}

// Quantile returns the value at quantile q in [0, 1]: the upper bound of
// the bucket holding the value of rank ceil(q*n), as HDR Histogram's
// "highest equivalent value" does, clamped to the recorded extremes so that
// Quantile(0) is Min and Quantile(1) is Max exactly. Empty: 0.
func (h *Histogram) Quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	if math.IsNaN(q) || q <= 0 {
		return toDuration(h.min)
	}
	if q >= 1 {
		return toDuration(h.max)
	}
	rank := uint64(math.Ceil(q * float64(h.n)))
	rank = max(rank, 1)
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			_, hi := bounds(i)
			return toDuration(min(max(hi, h.min), h.max))
		}
	}
	return toDuration(h.max)
}

// Merge adds every value of o to h.
func (h *Histogram) Merge(o *Histogram) {
	if o.n == 0 {
		return
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	if h.n == 0 || o.min < h.min {
		h.min = o.min
	}
	h.max = max(h.max, o.max)
	h.n += o.n
	h.sum += o.sum
}

// Reset empties h.
func (h *Histogram) Reset() { *h = Histogram{} }

// Bucket is one non-empty bucket: Count values at most Upper (and above
// the previous bucket's Upper).
type Bucket struct {
	Upper time.Duration `json:"upperNs"`
	Count uint64        `json:"count"`
}

// Buckets lists the non-empty buckets in increasing order, so that a
// result file keeps the whole distribution and runs can be merged later.
func (h *Histogram) Buckets() []Bucket {
	var out []Bucket
	for i, c := range h.counts {
		if c == 0 {
			continue
		}
		_, hi := bounds(i)
		out = append(out, Bucket{Upper: toDuration(hi), Count: c})
	}
	return out
}

func toDuration(v uint64) time.Duration {
	if v > math.MaxInt64 {
		return math.MaxInt64
	}
	return time.Duration(v)
}
