package wire

import (
	"errors"
	"strings"
	"testing"
)

func TestParseUsername(t *testing.T) {
	tests := []struct {
		name, u, scope, id, apiVersion string
	}{
		{"docs", "0ne00000A0A/registrations/dev1/api-version=2019-03-31", "0ne00000A0A", "dev1", "2019-03-31"},
		{"C", "0ne00000A0A/registrations/dev1/api-version=2021-06-01&ClientVersion=1.15.0", "0ne00000A0A", "dev1", "2021-06-01"},
		{"Node", "0ne00000A0A/registrations/dev-1/api-version=2019-03-31&ClientVersion=azure-iot-provisioning-device%2F1.8.1", "0ne00000A0A", "dev-1", "2019-03-31"},
		{"Python", "0ne1/registrations/d.1/api-version=2019-03-31&ClientVersion=azure-iot-provisioning-devicesdk%2F2.12.0%28Python%203.11%3BLinux%3Bx86_64%29", "0ne1", "d.1", "2019-03-31"},
		{"Java bug", "0ne1/registrations/d_1/api-version=2019-03-31&ClientVersion=2019-03-31", "0ne1", "d_1", "2019-03-31"},
		{"C# escaped", "0ne1/registrations/d:1/api-version=2019-03-31&ClientVersion=Microsoft.Azure.Devices.Provisioning.Client%2F1.19.0%20%28.NET%29", "0ne1", "d:1", "2019-03-31"},
		{"old preview", "0ne1/registrations/d1/api-version=2017-08-31-preview", "0ne1", "d1", "2017-08-31-preview"},
		{"no query", "0ne1/registrations/d1/", "0ne1", "d1", ""},
		{"unencoded junk in ClientVersion", "0ne1/registrations/d1/api-version=1&ClientVersion=a%zz;b", "0ne1", "d1", "1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			scope, id, q, err := ParseUsername(tt.u)
			if err != nil {
				t.Fatalf("ParseUsername(%q): %v", tt.u, err)
			}
			if scope != tt.scope || id != tt.id || q.Get(ParamAPIVersion) != tt.apiVersion {
				t.Fatalf("ParseUsername(%q) = %q, %q, %v", tt.u, scope, id, q)
			}
		})
	}
}

func TestParseUsernameErrors(t *testing.T) {
	for _, u := range []string{
		"",
		"dev1",
		"0ne1/registrations/dev1",
		"/registrations/dev1/api-version=1",
		"0ne1/registrations//api-version=1",
		"a/b/registrations/dev1/api-version=1",
		"0ne1/Registrations/dev1/api-version=1",
		"0ne1/registrations/" + strings.Repeat("a", MaxUsernameLen) + "/",
	} {
		_, _, _, err := ParseUsername(u)
		if _, ok := errors.AsType[*UsernameError](err); !ok {
			t.Errorf("ParseUsername(%q) error = %v, want *UsernameError", u, err)
		}
	}
}

func TestFormatUsername(t *testing.T) {
	tests := []struct {
		scope, id, api, cv, want string
	}{
		{"0ne1", "dev1", "", "", "0ne1/registrations/dev1/api-version=2019-03-31"},
		{"0ne1", "dev1", "2021-06-01", "dpsdevice/0.1 (go)", "0ne1/registrations/dev1/api-version=2021-06-01&ClientVersion=dpsdevice%2F0.1+%28go%29"},
	}
	for _, tt := range tests {
		got := FormatUsername(tt.scope, tt.id, tt.api, tt.cv)
		if got != tt.want {
			t.Errorf("FormatUsername = %q, want %q", got, tt.want)
		}
		scope, id, q, err := ParseUsername(got)
		if err != nil || scope != tt.scope || id != tt.id || (tt.cv != "" && q.Get(ParamClientVersion) != tt.cv) {
			t.Errorf("ParseUsername(%q) = %q, %q, %v, %v", got, scope, id, q, err)
		}
	}
}

func FuzzParseUsername(f *testing.F) {
	f.Add("0ne00000A0A/registrations/dev1/api-version=2019-03-31&ClientVersion=azure-iot-provisioning-device%2F1.8.1")
	f.Add("0ne1/registrations/d1/")
	f.Add("a/registrations/b/registrations/c/x=%zz&&=")
	f.Fuzz(func(t *testing.T, u string) {
		scope, id, q, err := ParseUsername(u)
		if err != nil {
			if _, ok := errors.AsType[*UsernameError](err); !ok {
				t.Fatalf("error of type %T", err)
			}
			return
		}
		if scope == "" || id == "" || strings.Contains(scope, "/") || strings.Contains(id, "/") || q == nil {
			t.Fatalf("ParseUsername(%q) = %q, %q, %v", u, scope, id, q)
		}
		if !strings.HasPrefix(u, scope+"/registrations/"+id+"/") {
			t.Fatalf("%q, %q are not the username's prefix %q", scope, id, u)
		}
		api := q.Get(ParamAPIVersion)
		cv := q.Get(ParamClientVersion)
		again := FormatUsername(scope, id, api, cv)
		if len(again) > MaxUsernameLen {
			return
		}
		scope2, id2, q2, err := ParseUsername(again)
		if err != nil || scope2 != scope || id2 != id {
			t.Fatalf("round trip %q -> %q: %q, %q, %v", u, again, scope2, id2, err)
		}
		wantAPI := api
		if wantAPI == "" {
			wantAPI = DefaultAPIVersion
		}
		if q2.Get(ParamAPIVersion) != wantAPI || q2.Get(ParamClientVersion) != cv {
			t.Fatalf("round trip query %v -> %v", q, q2)
		}
	})
}
