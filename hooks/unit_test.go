package hooks

import (
	"testing"
	"time"

	"github.com/dpsbroker/dpsbroker/provisioning"
)

func TestBucket(t *testing.T) {
	var b bucket
	t0 := time.Unix(1000, 0)
	for i := 0; i < 5; i++ {
		if ok, _ := b.take(t0, 5, 2*time.Second); !ok {
			t.Fatalf("take %d refused within the burst", i+1)
		}
	}
	ok, wait := b.take(t0, 5, 2*time.Second)
	if ok || wait != 2*time.Second {
		t.Fatalf("sixth take: ok=%v wait=%v, want refused for 2s", ok, wait)
	}
	if ok, _ := b.take(t0.Add(2*time.Second), 5, 2*time.Second); !ok {
		t.Fatal("a token should have come back after one interval")
	}
	if ok, _ := b.take(t0.Add(time.Hour), 5, 2*time.Second); !ok {
		t.Fatal("refused after an hour")
	}
}

func TestRidOf(t *testing.T) {
	tests := []struct{ topic, rid, want string }{
		{"$dps/registrations/PUT/iotdps-register/?$rid=1", "1", "1"},
		{"$dps/registrations/PUT/nope/?$rid=abc&x=1", "", "abc"},
		{"$dps/registrations/PUT/nope/?x=1&$rid=abc", "", "abc"},
		{"$dps/registrations/PUT/nope/?$rid=a$b", "", ""},
		{"$dps/registrations/PUT/nope/?$rid=", "", ""},
		{"$dps/registrations/PUT/nope/", "", ""},
		{"$dps/registrations/PUT/nope/?$rid=a\x01", "", ""},
	}
	for _, tc := range tests {
		if got := ridOf(tc.topic, tc.rid); got != tc.want {
			t.Errorf("ridOf(%q, %q) = %q, want %q", tc.topic, tc.rid, got, tc.want)
		}
	}
}

func TestIsEventFilter(t *testing.T) {
	tests := []struct {
		f    string
		want bool
	}{
		{EventFilter, true},
		{EventTopicPrefix + "refused/+", true},
		{"$share/g/" + EventFilter, true},
		{"$share/g", false},
		{"$share/g/#", false},
		{"#", false},
		{"$dpsbroker/#", false},
		{"$dps/registrations/res/#", false},
	}
	for _, tc := range tests {
		if got := isEventFilter(tc.f); got != tc.want {
			t.Errorf("isEventFilter(%q) = %v", tc.f, got)
		}
	}
}

func TestEventTopic(t *testing.T) {
	tests := []struct {
		ev   provisioning.Event
		want string
	}{
		{provisioning.Event{Type: provisioning.EventAssigned, RegistrationID: "dev-1"}, "$dpsbroker/events/assigned/dev-1"},
		{provisioning.Event{Type: provisioning.EventRefused, RegistrationID: "a/b#"}, "$dpsbroker/events/refused/_"},
		{provisioning.Event{Type: provisioning.EventRefused}, "$dpsbroker/events/refused/_"},
	}
	for _, tc := range tests {
		if got := EventTopic(&tc.ev); got != tc.want {
			t.Errorf("EventTopic(%+v) = %q, want %q", tc.ev, got, tc.want)
		}
	}
}
