package broker

import (
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/dpsbroker/dpsbroker/provisioning"
)

func TestDefaultConfigIsValid(t *testing.T) {
	c := DefaultConfig()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
}

// TestValidateReportsEverything: every problem is in the one error.
func TestValidateReportsEverything(t *testing.T) {
	c := DefaultConfig()
	c.MQTTAddr = "nope"
	c.IDScope = "a/b"
	c.TLSCert = "server.pem"
	c.RetryAfter = 1500 * time.Millisecond
	c.MaxPacketSize = 10
	c.MaxConnections = -1
	c.KeyExchange = "rsa"
	c.LogLevel = "loud"
	c.LogFormat = "xml"
	c.AdminToken = "short"
	c.Hubs = HubList{{HostName: "a.example.net", Weight: 1}, {HostName: "A.example.net", Weight: 1}}
	err := c.Validate()
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{
		"mqtt-addr", "id-scope", "tls-cert and tls-key", "retry-after", "max-packet-size",
		"max-connections", "key-exchange", "log-level", "log-format", "ADMIN_TOKEN", "hub",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
}

func TestValidateCases(t *testing.T) {
	for _, tc := range []struct {
		name   string
		edit   func(*Config)
		wantOK bool
	}{
		{"both device listeners off", func(c *Config) { c.MQTTAddr, c.WSAddr = "", "" }, false},
		{"only websocket", func(c *Config) { c.MQTTAddr = "" }, true},
		{"redis without data dir but dev PKI needs one", func(c *Config) { c.RedisAddr, c.DataDir = "127.0.0.1:6379", "" }, false},
		{"redis, certificates and token: no data dir needed", func(c *Config) {
			c.RedisAddr, c.DataDir, c.TLSCert, c.TLSKey = "127.0.0.1:6379", "", "s.pem", "s.key"
			c.AdminToken = strings.Repeat("x", 32)
		}, true},
		{"negative per-ip cap", func(c *Config) { c.MaxConnectionsPerIP = -1 }, false},
		{"bad dev host", func(c *Config) { c.DevHosts = []string{"not a host"} }, false},
		{"ip dev host", func(c *Config) { c.DevHosts = []string{"192.0.2.1", "dps.example.net"} }, true},
		{"x25519", func(c *Config) { c.KeyExchange = KeyExchangeX25519 }, true},
		{"hybrid", func(c *Config) { c.KeyExchange = KeyExchangeHybrid }, true},
		{"port out of range", func(c *Config) { c.HTTPAddr = ":70000" }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			tc.edit(&c)
			err := c.Validate()
			if (err == nil) != tc.wantOK {
				t.Fatalf("Validate() = %v, want ok=%v", err, tc.wantOK)
			}
		})
	}
}

// TestLayering: file, then environment, then flags; a repeatable flag
// replaces the list of an earlier source.
func TestLayering(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "dpsbroker.json")
	err := os.WriteFile(file, []byte(`{
		"mqtt-addr": ":1883",
		"id-scope": "0neFILE",
		"hub": ["file-a.example.net=2", "file-b.example.net"],
		"connect-timeout": "7s",
		"retry-after": 5,
		"session-tickets": true,
		"fast-path": true,
		"max-connections": 10
	}`), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	c := DefaultConfig()
	if err := c.LoadFile(file); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{
		"DPSBROKER_ID_SCOPE":    "0neENV",
		"DPSBROKER_ADMIN_TOKEN": "env-token-0123456789",
		"DPSBROKER_HTTP_ADDR":   "",
	}
	if err := c.ApplyEnv(func(k string) (string, bool) { v, ok := env[k]; return v, ok }); err != nil {
		t.Fatal(err)
	}
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	c.RegisterFlags(fs)
	if err := fs.Parse([]string{"--hub", "flag.example.net=3", "--max-connections", "20"}); err != nil {
		t.Fatal(err)
	}
	want := DefaultConfig()
	want.MQTTAddr = ":1883"
	want.IDScope = "0neENV"
	want.Hubs = HubList{{HostName: "flag.example.net", Weight: 3}}
	want.ConnectTimeout = 7 * time.Second
	want.RetryAfter = 5 * time.Second
	want.SessionTickets = true
	want.FastPath = true
	want.MaxConnections = 20
	want.AdminToken = "env-token-0123456789"
	want.HTTPAddr = ""
	if got := c; !sameConfig(got, want) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
	if fs.Lookup("admin-token") != nil || fs.Lookup("redis-password") != nil {
		t.Error("secrets must not be flags")
	}
}

func sameConfig(a, b Config) bool {
	if a.Hubs.String() != b.Hubs.String() || strings.Join(a.DevHosts, ",") != strings.Join(b.DevHosts, ",") {
		return false
	}
	a.Hubs, b.Hubs, a.DevHosts, b.DevHosts = nil, nil, nil, nil
	return reflect.DeepEqual(a, b)
}

func TestLoadFileErrors(t *testing.T) {
	for _, tc := range []struct {
		name, json string
		want       []string
	}{
		{"unknown keys and a secret, all reported", `{"mqtt_addr": ":1", "admin-token": "x", "bogus": 1}`,
			[]string{`unknown key "mqtt_addr"`, `unknown key "bogus"`, `"admin-token" is a secret`}},
		{"list where a scalar belongs", `{"id-scope": ["a", "b"]}`, []string{"list is not allowed"}},
		{"bad duration", `{"connect-timeout": "soon"}`, []string{"not a duration"}},
		{"bad hub", `{"hub": ["ok.example.net", "bad host"]}`, []string{"bad host"}},
		{"not JSON", `mqtt-addr = 1`, []string{"config file"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			err := c.loadJSON([]byte(tc.json))
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q: %v", w, err)
				}
			}
		})
	}
}

func TestApplyEnvLists(t *testing.T) {
	c := DefaultConfig()
	env := map[string]string{"DPSBROKER_HUB": "a.example.net=2, b.example.net", "DPSBROKER_DEV_HOST": "dps.local,192.0.2.7"}
	if err := c.ApplyEnv(func(k string) (string, bool) { v, ok := env[k]; return v, ok }); err != nil {
		t.Fatal(err)
	}
	if got := c.Hubs.String(); got != "a.example.net=2,b.example.net=1" {
		t.Errorf("hubs %s", got)
	}
	if got := strings.Join(c.DevHosts, ","); got != "dps.local,192.0.2.7" {
		t.Errorf("dev hosts %s", got)
	}
	if _, err := provisioning.NewAllocator(c.Hubs); err != nil {
		t.Error(err)
	}
}
