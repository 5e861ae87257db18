package hist

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

func TestIndexBoundsRoundTrip(t *testing.T) {
	values := []uint64{0, 1, 127, 128, 255, 256, 257, 511, 512, 1000, 1 << 20, 123456789, math.MaxInt64, math.MaxUint64}
	for _, v := range values {
		i := index(v)
		if i < 0 || i >= nBuckets {
			t.Fatalf("index(%d) = %d, out of range", v, i)
		}
		lo, hi := bounds(i)
		if v < lo || v > hi {
			t.Errorf("value %d in bucket %d with bounds [%d, %d]", v, i, lo, hi)
		}
	}
	// Buckets tile the range: each starts right after the previous one.
	var next uint64
	for i := range nBuckets {
		lo, hi := bounds(i)
		if lo != next {
			t.Fatalf("bucket %d starts at %d, want %d", i, lo, next)
		}
		if i == nBuckets-1 {
			if hi != math.MaxUint64 {
				t.Fatalf("last bucket ends at %d", hi)
			}
			break
		}
		next = hi + 1
	}
}

func TestQuantiles(t *testing.T) {
	tests := []struct {
		name   string
		values []time.Duration
		q      float64
		want   time.Duration
	}{
		{"empty", nil, 0.5, 0},
		{"single", []time.Duration{7 * time.Millisecond}, 0.99, 7 * time.Millisecond},
		{"min", []time.Duration{3, 1, 2}, 0, 1},
		{"max", []time.Duration{3, 1, 2}, 1, 3},
		{"exact small median", []time.Duration{1, 2, 3, 4, 100}, 0.5, 3},
		{"p99 of two groups", append(repeat(time.Millisecond, 99), time.Second), 0.99, time.Millisecond},
		{"p99.9 of two groups", append(repeat(time.Millisecond, 99), time.Second), 0.999, time.Second},
		{"NaN is min", []time.Duration{5, 9}, math.NaN(), 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := New()
			for _, v := range tt.values {
				h.Record(v)
			}
			got := h.Quantile(tt.q)
			if !within(got, tt.want) {
				t.Fatalf("Quantile(%v) = %v, want %v (within 1%%)", tt.q, got, tt.want)
			}
		})
	}
}

// TestAgainstSorted compares quantiles of random latencies with the exact
// order statistics: the error must stay within the bucket width.
func TestAgainstSorted(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	h := New()
	var vals []time.Duration
	for range 20000 {
		v := time.Duration(r.ExpFloat64() * float64(5*time.Millisecond))
		vals = append(vals, v)
		h.Record(v)
	}
	slices.Sort(vals)
	for _, q := range []float64{0.01, 0.25, 0.5, 0.9, 0.99, 0.999} {
		exact := vals[int(math.Ceil(q*float64(len(vals))))-1]
		if got := h.Quantile(q); !within(got, exact) {
			t.Errorf("q=%v: got %v, exact %v", q, got, exact)
		}
	}
	if h.Count() != uint64(len(vals)) || h.Min() != vals[0] || h.Max() != vals[len(vals)-1] {
		t.Errorf("count/min/max = %d/%v/%v", h.Count(), h.Min(), h.Max())
	}
}

func TestMergeAndReset(t *testing.T) {
	a, b, all := New(), New(), New()
	for i := range 1000 {
		d := time.Duration(i) * time.Microsecond
		all.Record(d)
		if i%3 == 0 {
			a.Record(d)
		} else {
			b.Record(d)
		}
	}
	a.Merge(b)
	a.Merge(New()) // merging an empty histogram changes nothing
	for _, q := range []float64{0, 0.5, 0.9, 1} {
		if a.Quantile(q) != all.Quantile(q) {
			t.Errorf("merged q=%v: %v, want %v", q, a.Quantile(q), all.Quantile(q))
		}
	}
	if a.Count() != all.Count() || a.Mean() != all.Mean() {
		t.Errorf("merged count/mean %d/%v, want %d/%v", a.Count(), a.Mean(), all.Count(), all.Mean())
	}
	var total uint64
	for _, bk := range a.Buckets() {
		total += bk.Count
	}
	if total != a.Count() {
		t.Errorf("buckets hold %d values, want %d", total, a.Count())
	}
	a.Reset()
	if a.Count() != 0 || a.Quantile(0.5) != 0 || len(a.Buckets()) != 0 {
		t.Errorf("after Reset: count %d", a.Count())
	}
}

func TestNegativeIsZero(t *testing.T) {
	h := New()
	h.Record(-time.Second)
	if h.Max() != 0 || h.Count() != 1 {
		t.Fatalf("max %v count %d", h.Max(), h.Count())
	}
}

func repeat(d time.Duration, n int) []time.Duration {
	out := make([]time.Duration, n)
	for i := range out {
		out[i] = d
	}
	return out
}

// within allows the histogram's relative error (one bucket width).
func within(got, want time.Duration) bool {
	diff := math.Abs(float64(got - want))
	return diff <= float64(want)/float64(sub)+1
}
