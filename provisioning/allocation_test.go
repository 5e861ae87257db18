package provisioning

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
)

func mustAllocator(t testing.TB, hubs ...Hub) *Allocator {
	t.Helper()
	a, err := NewAllocator(hubs)
	if err != nil {
		t.Fatalf("NewAllocator: %v", err)
	}
	return a
}

func hubs(names ...string) []Hub {
	out := make([]Hub, len(names))
	for i, n := range names {
		out[i] = Hub{HostName: n, Weight: 1}
	}
	return out
}

func TestParseHub(t *testing.T) {
	tests := []struct {
		in      string
		want    Hub
		wantErr string
	}{
		{in: "hub1.azure-devices.net", want: Hub{"hub1.azure-devices.net", 1}},
		{in: " hub1.example=3 ", want: Hub{"hub1.example", 3}},
		{in: "localhost", want: Hub{"localhost", 1}},
		{in: "hub=0", wantErr: "out of range"},
		{in: "hub=-2", wantErr: "out of range"},
		{in: "hub=10001", wantErr: "out of range"},
		{in: "hub=x", wantErr: "not an integer"},
		{in: "", wantErr: "empty"},
		{in: "=2", wantErr: "empty"},
		{in: "hub_1.example", wantErr: "character '_'"},
		{in: "hub1.example:8883", wantErr: "character ':'"},
		{in: "-hub.example", wantErr: "hyphen"},
		{in: "hub..example", wantErr: "empty label"},
		{in: "hub.example.", wantErr: "empty label"},
		{in: strings.Repeat("a", 64) + ".example", wantErr: "longer than 63"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseHub(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseHub(%q) error = %v, want it to contain %q", tt.in, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseHub(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestNewAllocator(t *testing.T) {
	tests := []struct {
		name    string
		hubs    []Hub
		wantErr []string
	}{
		{name: "ok", hubs: hubs("a.example", "b.example")},
		{name: "empty list", hubs: nil},
		{name: "zero weight defaults to 1", hubs: []Hub{{HostName: "a.example"}}},
		{name: "duplicate ignoring case", hubs: hubs("a.example", "A.Example"), wantErr: []string{"listed twice"}},
		{name: "all problems", hubs: []Hub{{HostName: "bad_name", Weight: 1}, {HostName: "b.example", Weight: -1}},
			wantErr: []string{"character '_'", "out of range"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := NewAllocator(tt.hubs)
			if len(tt.wantErr) == 0 {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				for _, h := range a.Hubs() {
					if h.Weight != 1 {
						t.Errorf("hub %s weight %d, want 1", h.HostName, h.Weight)
					}
				}
				return
			}
			if err == nil {
				t.Fatalf("got no error, want %q", tt.wantErr)
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestAllocate(t *testing.T) {
	a := mustAllocator(t, hubs("hub-a.example", "hub-b.example", "Hub-C.example")...)
	no := false
	yes := true
	tests := []struct {
		name     string
		policy   *EnrollmentPolicy
		current  string
		want     string   // exact hub, when fixed
		oneOf    []string // allowed hubs, when hashed
		wantKind error
		wantCode int
	}{
		{name: "nil policy hashes over all", policy: nil, oneOf: []string{"hub-a.example", "hub-b.example", "Hub-C.example"}},
		{name: "hashed subset", policy: &EnrollmentPolicy{IoTHubs: []string{"hub-a.example", "hub-b.example"}}, oneOf: []string{"hub-a.example", "hub-b.example"}},
		{name: "legacy host name", policy: &EnrollmentPolicy{IoTHubHostName: "HUB-B.example"}, want: "hub-b.example"},
		{name: "canonical spelling returned", policy: &EnrollmentPolicy{IoTHubs: []string{"hub-c.EXAMPLE"}}, want: "Hub-C.example"},
		{name: "static one hub", policy: &EnrollmentPolicy{AllocationPolicy: AllocationStatic, IoTHubs: []string{"hub-b.example"}}, want: "hub-b.example"},
		{name: "static host name", policy: &EnrollmentPolicy{AllocationPolicy: AllocationStatic, IoTHubHostName: "hub-a.example"}, want: "hub-a.example"},
		{name: "static two hubs", policy: &EnrollmentPolicy{AllocationPolicy: AllocationStatic, IoTHubs: []string{"hub-a.example", "hub-b.example"}},
			wantKind: ErrStaticNeedsOneHub, wantCode: CodeNoHubAssigned},
		{name: "static no hub means all linked", policy: &EnrollmentPolicy{AllocationPolicy: AllocationStatic},
			wantKind: ErrStaticNeedsOneHub, wantCode: CodeNoHubAssigned},
		{name: "static two hubs even when keeping current", policy: &EnrollmentPolicy{AllocationPolicy: AllocationStatic, IoTHubs: []string{"hub-a.example", "hub-b.example"},
			ReprovisionPolicy: &ReprovisionPolicy{UpdateHubAssignment: &no}}, current: "hub-a.example",
			wantKind: ErrStaticNeedsOneHub, wantCode: CodeNoHubAssigned},
		{name: "custom", policy: &EnrollmentPolicy{AllocationPolicy: AllocationCustom},
			wantKind: ErrCustomAllocationUnsupported, wantCode: CodeCustomAllocationFailed},
		{name: "unlinked hub in list", policy: &EnrollmentPolicy{IoTHubs: []string{"hub-a.example", "other.example"}},
			wantKind: ErrHubNotLinked, wantCode: CodeNoHubAssigned},
		{name: "unlinked host name", policy: &EnrollmentPolicy{IoTHubHostName: "other.example"},
			wantKind: ErrHubNotLinked, wantCode: CodeNoHubAssigned},
		{name: "geoLatency falls back to hashed", policy: &EnrollmentPolicy{AllocationPolicy: AllocationGeoLatency, IoTHubs: []string{"hub-b.example"}}, want: "hub-b.example"},
		{name: "keep current when not updating", policy: &EnrollmentPolicy{ReprovisionPolicy: &ReprovisionPolicy{UpdateHubAssignment: &no}},
			current: "hub-c.example", want: "Hub-C.example"},
		{name: "current no longer a candidate", policy: &EnrollmentPolicy{IoTHubs: []string{"hub-a.example"}, ReprovisionPolicy: &ReprovisionPolicy{UpdateHubAssignment: &no}},
			current: "hub-c.example", want: "hub-a.example"},
		{name: "current unlinked", policy: &EnrollmentPolicy{ReprovisionPolicy: &ReprovisionPolicy{UpdateHubAssignment: &no}},
			current: "gone.example", oneOf: []string{"hub-a.example", "hub-b.example", "Hub-C.example"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := a.Allocate("device-1", tt.policy, tt.current)
			if tt.wantKind != nil {
				var ae *AllocationError
				if !errors.Is(err, tt.wantKind) || !errors.As(err, &ae) || ae.Code != tt.wantCode {
					t.Fatalf("Allocate = %q, %v; want %v with code %d", got, err, tt.wantKind, tt.wantCode)
				}
				if !strings.HasPrefix(err.Error(), fmt.Sprint(tt.wantCode)) {
					t.Errorf("error %q does not start with its code", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if tt.want != "" && got != tt.want {
				t.Fatalf("Allocate = %q, want %q", got, tt.want)
			}
			if tt.oneOf != nil && !containsFold(tt.oneOf, got) || got != "" && a.find(got) < 0 {
				t.Fatalf("Allocate = %q, want one of %v", got, tt.oneOf)
			}
		})
	}

	// Updating the assignment (the default) ignores current and hashes.
	want, _ := a.Allocate("device-1", &EnrollmentPolicy{ReprovisionPolicy: &ReprovisionPolicy{UpdateHubAssignment: &yes}}, "")
	for _, cur := range []string{"hub-a.example", "hub-b.example", "hub-c.example"} {
		if got, _ := a.Allocate("device-1", nil, cur); got != want {
			t.Errorf("with current %s and updateHubAssignment true, got %s, want the hashed %s", cur, got, want)
		}
	}
}

func TestAllocateNoHubs(t *testing.T) {
	a := mustAllocator(t)
	_, err := a.Allocate("dev", nil, "")
	var ae *AllocationError
	if !errors.Is(err, ErrNoHub) || !errors.As(err, &ae) || ae.Code != CodeNoHubAssigned {
		t.Fatalf("Allocate with no hubs = %v, want ErrNoHub with 400208", err)
	}
}

func TestAllocateLargeHubList(t *testing.T) {
	// More than 64 hubs takes the slice-backed candidate set.
	var hs []Hub
	for i := range 70 {
		hs = append(hs, Hub{HostName: fmt.Sprintf("hub%d.example", i), Weight: 1})
	}
	a := mustAllocator(t, hs...)
	got, err := a.Allocate("dev", &EnrollmentPolicy{IoTHubs: []string{"hub69.example", "hub65.example"}}, "")
	if err != nil || (got != "hub69.example" && got != "hub65.example") {
		t.Fatalf("Allocate = %q, %v", got, err)
	}
	if got, err := a.Allocate("dev", nil, ""); err != nil || a.find(got) < 0 {
		t.Fatalf("Allocate over 70 hubs = %q, %v", got, err)
	}
}

func TestCheckPolicy(t *testing.T) {
	a := mustAllocator(t, hubs("a.example", "b.example")...)
	if err := a.CheckPolicy(&EnrollmentPolicy{IoTHubs: []string{"A.example"}, IoTHubHostName: "b.example"}); err != nil {
		t.Fatalf("CheckPolicy of linked hubs: %v", err)
	}
	err := a.CheckPolicy(&EnrollmentPolicy{IoTHubs: []string{"a.example", "x.example"}, IoTHubHostName: "y.example"})
	var v *ValidationError
	if !errors.As(err, &v) || len(v.Problems) != 2 || v.Problems[0].Field != "iotHubHostName" || v.Problems[1].Field != "iotHubs[1]" {
		t.Fatalf("CheckPolicy = %v, want problems on iotHubHostName and iotHubs[1]", err)
	}
}

// spread allocates n IDs and returns the share of each hub.
func spread(t *testing.T, a *Allocator, n int) (map[string]float64, []string) {
	t.Helper()
	counts := map[string]int{}
	assigned := make([]string, n)
	for i := range n {
		h, err := a.Allocate(fmt.Sprintf("device-%06d", i), nil, "")
		if err != nil {
			t.Fatal(err)
		}
		counts[h]++
		assigned[i] = h
	}
	shares := map[string]float64{}
	for h, c := range counts {
		shares[h] = float64(c) / float64(n)
	}
	return shares, assigned
}

func TestAllocateSpread(t *testing.T) {
	const n = 30000
	tests := []struct {
		name string
		hubs []Hub
		want map[string]float64
	}{
		{name: "equal weights", hubs: hubs("a.example", "b.example", "c.example"),
			want: map[string]float64{"a.example": 1.0 / 3, "b.example": 1.0 / 3, "c.example": 1.0 / 3}},
		{name: "weights 1:2:1", hubs: []Hub{{"a.example", 1}, {"b.example", 2}, {"c.example", 1}},
			want: map[string]float64{"a.example": 0.25, "b.example": 0.5, "c.example": 0.25}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			shares, _ := spread(t, mustAllocator(t, tt.hubs...), n)
			for h, w := range tt.want {
				if math.Abs(shares[h]-w) > 0.02 {
					t.Errorf("hub %s got %.2f%% of devices, want %.2f%% ± 2%%", h, 100*shares[h], 100*w)
				}
			}
		})
	}
}

func TestAllocateAddingHubMovesOnlyItsShare(t *testing.T) {
	const n = 30000
	three := hubs("a.example", "b.example", "c.example")
	_, before := spread(t, mustAllocator(t, three...), n)
	_, after := spread(t, mustAllocator(t, append(three, Hub{"d.example", 1})...), n)
	moved := 0
	for i := range n {
		if before[i] == after[i] {
			continue
		}
		moved++
		if after[i] != "d.example" {
			t.Fatalf("device %d moved from %s to %s, not to the new hub", i, before[i], after[i])
		}
	}
	if share := float64(moved) / n; math.Abs(share-0.25) > 0.02 {
		t.Errorf("%.2f%% of devices moved, want about 25%%", 100*share)
	}
}

func TestAllocateStable(t *testing.T) {
	// Two allocators (as on two brokers) built with the hubs in another
	// order agree, and case does not matter in the registration ID.
	a1 := mustAllocator(t, hubs("a.example", "b.example", "c.example")...)
	a2 := mustAllocator(t, hubs("c.example", "a.example", "b.example")...)
	for i := range 1000 {
		id := fmt.Sprintf("Device-%d", i)
		h1, _ := a1.Allocate(id, nil, "")
		h2, _ := a2.Allocate(strings.ToLower(id), nil, "")
		if h1 != h2 {
			t.Fatalf("%s: %s on one allocator, %s on the other", id, h1, h2)
		}
	}
}

// TestAllocateGolden pins the hash: a change here reassigns most devices of
// every deployment on upgrade, so it must be deliberate.
func TestAllocateGolden(t *testing.T) {
	a := mustAllocator(t, hubs("hub1.azure-devices.net", "hub2.azure-devices.net", "hub3.azure-devices.net")...)
	golden := map[string]string{}
	for _, id := range []string{"dev1", "dev2", "dev3", "device-000001", "sensor:42", "x"} {
		h, err := a.Allocate(id, nil, "")
		if err != nil {
			t.Fatal(err)
		}
		golden[id] = h
	}
	want := map[string]string{
		"dev1":          "hub3.azure-devices.net",
		"dev2":          "hub1.azure-devices.net",
		"dev3":          "hub3.azure-devices.net",
		"device-000001": "hub2.azure-devices.net",
		"sensor:42":     "hub3.azure-devices.net",
		"x":             "hub2.azure-devices.net",
	}
	for id, h := range golden {
		if want[id] != h {
			t.Errorf("%s -> %s, want %s", id, h, want[id])
		}
	}
}

func BenchmarkAllocateHashed(b *testing.B) {
	a := mustAllocator(b, []Hub{{"hub1.azure-devices.net", 1}, {"hub2.azure-devices.net", 2}, {"hub3.azure-devices.net", 1}, {"hub4.azure-devices.net", 1}}...)
	p := &EnrollmentPolicy{AllocationPolicy: AllocationHashed}
	ids := make([]string, 1024)
	for i := range ids {
		ids[i] = fmt.Sprintf("device-%08d", i)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if _, err := a.Allocate(ids[i&1023], p, ""); err != nil {
			b.Fatal(err)
		}
	}
}
