package wire

import (
	"encoding/json"
	"testing"
	"time"
)

func TestTimeMarshal(t *testing.T) {
	tests := []struct {
		in   time.Time
		want string
	}{
		{time.Date(2020, 4, 10, 3, 11, 13, 27699700, time.UTC), `"2020-04-10T03:11:13.0276997Z"`},
		{time.Date(2020, 4, 10, 5, 11, 13, 0, time.FixedZone("", 2*3600)), `"2020-04-10T03:11:13.0000000Z"`},
		{time.Date(2020, 4, 10, 3, 11, 13, 123456789, time.UTC), `"2020-04-10T03:11:13.1234567Z"`},
	}
	for _, tt := range tests {
		got, err := json.Marshal(NewTime(tt.in))
		if err != nil || string(got) != tt.want {
			t.Errorf("Marshal(%v) = %s, %v; want %s", tt.in, got, err, tt.want)
		}
	}
	if _, err := json.Marshal(NewTime(time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC))); err == nil {
		t.Error("year 10000 marshalled")
	}
}

func TestTimeUnmarshal(t *testing.T) {
	want := time.Date(2020, 4, 10, 3, 11, 13, 27699700, time.UTC)
	for _, s := range []string{
		`"2020-04-10T03:11:13.0276997Z"`,
		`"2020-04-10T03:11:13.0276997+00:00"`,
		`"2020-04-10T05:11:13.02769970+02:00"`,
		`"2020-04-10T03:11:13.0276997z"`,
		`"2020-04-10t03:11:13.0276997Z"`,
	} {
		var tm Time
		if err := json.Unmarshal([]byte(s), &tm); err != nil || !tm.Equal(want) {
			t.Errorf("Unmarshal(%s) = %v, %v", s, tm, err)
		}
	}
	var tm Time
	if err := json.Unmarshal([]byte(`null`), &tm); err != nil || !tm.IsZero() {
		t.Errorf("null: %v, %v", tm, err)
	}
	for _, s := range []string{`"2020-04-10"`, `"yesterday"`, `12`, `"2020-04-10T03:11:13"`} {
		if err := json.Unmarshal([]byte(s), &tm); err == nil {
			t.Errorf("Unmarshal(%s) succeeded", s)
		}
	}
}
