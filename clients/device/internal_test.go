package device

import (
	"regexp"
	"testing"
	"time"

	"github.com/dpsbroker/dpsbroker/provisioning/wire"
)

// The broker's retry-after is a floor: no jitter may bring a wait under it,
// and without one the backoff doubles up to its cap.
func TestBackoff(t *testing.T) {
	s := &settings{Config: Config{RetryBackoff: time.Second, MaxRetryBackoff: 8 * time.Second}}
	tests := []struct {
		attempt  int
		floor    time.Duration
		min, max time.Duration
	}{
		{1, 0, 500 * time.Millisecond, time.Second},
		{2, 0, time.Second, 2 * time.Second},
		{3, 0, 2 * time.Second, 4 * time.Second},
		{4, 0, 4 * time.Second, 8 * time.Second},
		{10, 0, 4 * time.Second, 8 * time.Second}, // capped
		{1, 3 * time.Second, 3 * time.Second, 3 * time.Second},
		{4, 5 * time.Second, 5 * time.Second, 8 * time.Second},
		{1, time.Hour, time.Hour, time.Hour},
	}
	for _, tt := range tests {
		for range 200 {
			if d := s.backoff(tt.attempt, tt.floor); d < tt.min || d > tt.max {
				t.Fatalf("backoff(%d, %v) = %v, want in [%v, %v]", tt.attempt, tt.floor, d, tt.min, tt.max)
			}
		}
	}
}

var uuidV4 = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

// $rid values are UUIDs the broker accepts and echoes, and never repeat.
func TestNewRID(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		rid := newRID()
		if !uuidV4.MatchString(rid) {
			t.Fatalf("rid %q is not a UUID v4", rid)
		}
		if _, err := wire.ParseRequestTopic(string(wire.AppendPollTopic(nil, rid, "op"))); err != nil {
			t.Fatalf("rid %q: %v", rid, err)
		}
		if seen[rid] {
			t.Fatalf("rid %q repeated", rid)
		}
		seen[rid] = true
	}
}
