package broker

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/dpsbroker/dpsbroker/hooks"
	"github.com/dpsbroker/dpsbroker/provisioning"
	"github.com/dpsbroker/dpsbroker/provisioning/tpmattest"
	"github.com/dpsbroker/dpsbroker/provisioning/wire"
)

// Defaults. The MQTT and WebSocket ports are unprivileged so that the
// broker runs without root; put a TCP load balancer or a port redirect in
// front for 443. The admin API listens on loopback only unless the operator
// says otherwise: it can disable a whole fleet.
const (
	DefaultDataDir         = ".dpsbroker"
	DefaultMQTTAddr        = ":8883"
	DefaultWSAddr          = ":8884"
	DefaultAdminAddr       = "127.0.0.1:8443"
	DefaultHTTPAddr        = ":8080"
	DefaultIDScope         = "0ne00000000"
	DefaultMaxPacketSize   = hooks.DefaultMaxPacketSize
	DefaultConnectTimeout  = 10 * time.Second
	DefaultRetryAfter      = time.Duration(wire.DefaultRetryAfter) * time.Second
	DefaultRequestTimeout  = 5 * time.Second
	DefaultOperationTTL    = 10 * time.Minute
	DefaultTPMChallengeTTL = tpmattest.DefaultChallengeTTL
	DefaultShutdownTimeout = 15 * time.Second
	DefaultMaxConnections  = 50000
	DefaultMaxConnsPerIP   = 0
)

// Key exchange choices for TLS 1.3 (Config.KeyExchange).
const (
	// KeyExchangeDefault keeps Go's default preference, which starts with
	// the hybrid post-quantum X25519MLKEM768: the safe choice.
	KeyExchangeDefault = "default"
	// KeyExchangeHybrid is another name for KeyExchangeDefault, as
	// cmd/dpsload's -curves spells it.
	KeyExchangeHybrid = "hybrid"
	// KeyExchangeX25519 offers only X25519: about 30-40 % more handshakes
	// per second on a small machine, without post-quantum protection of
	// the session keys.
	KeyExchangeX25519 = "x25519"
	// KeyExchangeP256 offers only NIST P-256, for devices whose TLS stack
	// has nothing else; similar speed to X25519.
	KeyExchangeP256 = "p256"
)

// Config is everything an operator sets. Build it with DefaultConfig, then
// LoadFile, ApplyEnv and the command-line flags (in that order, later wins),
// then Validate.
type Config struct {
	// DataDir holds the embedded store, the development PKI and the
	// generated admin token.
	DataDir string
	// MQTTAddr is the MQTT-over-TLS listener ("" disables it).
	MQTTAddr string
	// WSAddr is the MQTT-over-secure-WebSocket listener ("" disables it).
	// Every path is accepted, as the Azure SDKs use different ones.
	WSAddr string
	// AdminAddr is the HTTPS admin API ("" disables it).
	AdminAddr string
	// HTTPAddr serves /healthz, /readyz and /metrics in plain HTTP ("" disables it).
	HTTPAddr string
	// IDScope is the DPS ID scope devices put in their username.
	IDScope string
	// RedisAddr selects the Redis store (host:port); empty means the
	// embedded store in DataDir.
	RedisAddr string
	// RedisPassword authenticates to Redis; from DPSBROKER_REDIS_PASSWORD only.
	RedisPassword string
	// RedisDB selects the Redis logical database.
	RedisDB int
	// TLSCert and TLSKey are the server certificate (full chain, PEM) and
	// its key. Both empty: a development PKI is created in DataDir.
	TLSCert, TLSKey string
	// DevHosts are extra DNS names or IP addresses for the development
	// server certificate (localhost, 127.0.0.1 and ::1 are always in it).
	DevHosts []string
	// Hubs are the linked IoT hubs devices are allocated to.
	Hubs HubList
	// ServiceCA is a PEM file of CA certificates whose client
	// certificates authenticate back-end event subscribers.
	ServiceCA string
	// AdminToken authenticates the admin API (bearer token); from
	// DPSBROKER_ADMIN_TOKEN or AdminTokenFile. Empty: a random token is
	// created in DataDir on first run.
	AdminToken string
	// AdminTokenFile is read when AdminToken is empty.
	AdminTokenFile string
	// ServiceToken, when set, admits back-end event subscribers that
	// connect with username "service" and this password; from
	// DPSBROKER_SERVICE_TOKEN only.
	ServiceToken string
	// RetryAfter is the retry-after of 202 and 429 responses.
	RetryAfter time.Duration
	// RequestTimeout bounds the work of one device request.
	RequestTimeout time.Duration
	// OperationTTL is how long a finished operation can be polled.
	OperationTTL time.Duration
	// TPMChallengeTTL is how long a TPM device has to answer its
	// credential-activation challenge; each challenge answers once.
	TPMChallengeTTL time.Duration
	// MaxPacketSize bounds an MQTT packet; a larger one drops only that
	// connection.
	MaxPacketSize int
	// ConnectTimeout closes a connection that has not completed TLS and
	// sent CONNECT in time.
	ConnectTimeout time.Duration
	// MaxConnections caps open connections over all listeners (0: no cap).
	MaxConnections int
	// MaxConnectionsPerIP caps open connections per client IP (0: no cap).
	// Behind a TCP load balancer every connection has the balancer's
	// address: leave it 0 there.
	MaxConnectionsPerIP int
	// KeyExchange restricts TLS 1.3 key exchange: "default", "x25519" or "p256".
	KeyExchange string
	// SessionTickets lets returning devices resume TLS sessions (cheaper
	// reconnects, no forward secrecy across the ticket key's lifetime).
	// A resumed session still carries the device's certificate chain, and
	// the connect hook takes the enrollment decision again on every
	// connection, so a device disabled since its first connection is
	// refused on a resumed one too.
	SessionTickets bool
	// FastPath answers a register request with the final 200 at once
	// instead of 202 and a poll after RetryAfter (hooks.Options.FastPath).
	// Off by default: the C# v2 (MQTTnet) SDK requires the 202.
	FastPath bool
	// Pprof serves Go's runtime profiles (/debug/pprof/) on HTTPAddr, to
	// profile a running broker. They reveal internals (stacks, heap
	// contents' types, command line), so HTTPAddr must then be reachable
	// by operators only.
	Pprof bool
	// ShutdownTimeout bounds the drain of live sessions on shutdown.
	ShutdownTimeout time.Duration
	// LogLevel is debug, info, warn or error; LogFormat is text or json.
	LogLevel, LogFormat string
}

// DefaultConfig returns the configuration of a single development node.
func DefaultConfig() Config {
	return Config{
		DataDir:         DefaultDataDir,
		MQTTAddr:        DefaultMQTTAddr,
		WSAddr:          DefaultWSAddr,
		AdminAddr:       DefaultAdminAddr,
		HTTPAddr:        DefaultHTTPAddr,
		IDScope:         DefaultIDScope,
		RetryAfter:      DefaultRetryAfter,
		RequestTimeout:  DefaultRequestTimeout,
		OperationTTL:    DefaultOperationTTL,
		TPMChallengeTTL: DefaultTPMChallengeTTL,
		MaxPacketSize:   DefaultMaxPacketSize,
		ConnectTimeout:  DefaultConnectTimeout,
		MaxConnections:  DefaultMaxConnections,
		KeyExchange:     KeyExchangeDefault,
		ShutdownTimeout: DefaultShutdownTimeout,
		LogLevel:        "info",
		LogFormat:       "text",
		Hubs:            HubList{{HostName: "hub.example.net", Weight: 1}},
	}
}

// Validate reports every problem of the configuration at once.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	if c.MQTTAddr == "" && c.WSAddr == "" {
		bad("mqtt-addr and ws-addr are both empty: devices could not connect")
	}
	for _, a := range []struct{ name, v string }{
		{"mqtt-addr", c.MQTTAddr}, {"ws-addr", c.WSAddr}, {"admin-addr", c.AdminAddr},
		{"http-addr", c.HTTPAddr}, {"redis-addr", c.RedisAddr},
	} {
		if a.v == "" {
			continue
		}
		if _, port, err := net.SplitHostPort(a.v); err != nil {
			bad("%s %q: %v", a.name, a.v, err)
		} else if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
			bad("%s %q: port must be a number from 0 to 65535", a.name, a.v)
		}
	}
	if c.RedisAddr != "" && c.RedisAddr == c.MQTTAddr {
		bad("redis-addr equals mqtt-addr")
	}
	if err := validateIDScope(c.IDScope); err != nil {
		bad("id-scope: %v", err)
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		bad("tls-cert and tls-key must be given together")
	}
	needDataDir := c.RedisAddr == "" || c.TLSCert == "" || (c.AdminAddr != "" && c.AdminToken == "" && c.AdminTokenFile == "")
	if c.DataDir == "" && needDataDir {
		bad("data-dir is empty, but it is needed for the embedded store, the development PKI or the admin token")
	}
	for _, h := range c.DevHosts {
		if net.ParseIP(h) == nil && provisioning.ValidateHostName(h) != nil {
			bad("dev-host %q is neither an IP address nor a host name", h)
		}
	}
	if _, err := provisioning.NewAllocator(c.Hubs); err != nil {
		bad("hub: %v", err)
	}
	if c.AdminToken != "" && len(c.AdminToken) < 16 {
		bad("%s is shorter than 16 characters", EnvName("admin-token"))
	}
	if c.ServiceToken != "" && len(c.ServiceToken) < 16 {
		bad("%s is shorter than 16 characters", EnvName("service-token"))
	}
	if c.RedisDB < 0 {
		bad("redis-db %d is negative", c.RedisDB)
	}
	durations := []struct {
		name   string
		v, min time.Duration
	}{
		{"retry-after", c.RetryAfter, time.Second},
		{"request-timeout", c.RequestTimeout, 10 * time.Millisecond},
		{"operation-ttl", c.OperationTTL, time.Second},
		{"tpm-challenge-ttl", c.TPMChallengeTTL, time.Second},
		{"connect-timeout", c.ConnectTimeout, 10 * time.Millisecond},
		{"shutdown-timeout", c.ShutdownTimeout, 0},
	}
	for _, d := range durations {
		if d.v < d.min {
			bad("%s %v is below the minimum %v", d.name, d.v, d.min)
		}
	}
	if c.RetryAfter%time.Second != 0 {
		bad("retry-after %v must be whole seconds (the topic carries seconds)", c.RetryAfter)
	}
	const minPacket, maxPacket = 1024, 16 << 20
	if c.MaxPacketSize < minPacket || c.MaxPacketSize > maxPacket {
		bad("max-packet-size %d is out of range %d..%d", c.MaxPacketSize, minPacket, maxPacket)
	}
	if c.MaxConnections < 0 {
		bad("max-connections %d is negative", c.MaxConnections)
	}
	if c.MaxConnectionsPerIP < 0 {
		bad("max-connections-per-ip %d is negative", c.MaxConnectionsPerIP)
	}
	switch c.KeyExchange {
	case KeyExchangeDefault, KeyExchangeHybrid, KeyExchangeX25519, KeyExchangeP256:
	default:
		bad("key-exchange %q: want %s (or %s), %s or %s", c.KeyExchange, KeyExchangeDefault, KeyExchangeHybrid, KeyExchangeX25519, KeyExchangeP256)
	}
	if _, err := parseLevel(c.LogLevel); err != nil {
		bad("log-level: %v", err)
	}
	switch c.LogFormat {
	case "text", "json":
	default:
		bad("log-format %q: want text or json", c.LogFormat)
	}
	return errors.Join(errs...)
}

// validateIDScope accepts what fits in a DPS username: non-empty, no "/",
// printable ASCII without spaces.
func validateIDScope(s string) error {
	if s == "" {
		return errors.New("empty")
	}
	if len(s) > 64 {
		return fmt.Errorf("%d characters, the limit is 64", len(s))
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c >= 0x7f || c == '/' || c == '#' || c == '+' {
			return fmt.Errorf("character %q is not allowed", c)
		}
	}
	return nil
}

// HubList is the linked hubs; as text each is "host" or "host=weight".
type HubList []provisioning.Hub

// String formats the list as comma-separated "host=weight".
func (l HubList) String() string {
	parts := make([]string, len(l))
	for i, h := range l {
		parts[i] = h.HostName + "=" + strconv.Itoa(h.Weight)
	}
	return strings.Join(parts, ",")
}

// parseHubs parses comma-separated hubs.
func parseHubs(s string) (HubList, error) {
	var out HubList
	var errs []error
	for _, p := range strings.Split(s, ",") {
		if strings.TrimSpace(p) == "" {
			continue
		}
		h, err := provisioning.ParseHub(p)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, h)
	}
	return out, errors.Join(errs...)
}

// setting binds one configuration field to its name in the config file,
// the environment (DPSBROKER_ + upper-case name) and the command line.
type setting struct {
	name  string
	usage string
	value func(c *Config) flag.Value
	// secret settings come from the environment only: flags show in ps
	// and config files get copied around.
	secret bool
}

// settings lists every setting; one table serves the three sources.
var settings = []setting{
	{name: "data-dir", usage: "directory for the embedded store, the development PKI and the admin token", value: func(c *Config) flag.Value { return (*stringValue)(&c.DataDir) }},
	{name: "mqtt-addr", usage: "MQTT over TLS listen address (empty disables)", value: func(c *Config) flag.Value { return (*stringValue)(&c.MQTTAddr) }},
	{name: "ws-addr", usage: "MQTT over secure WebSocket listen address, any path (empty disables)", value: func(c *Config) flag.Value { return (*stringValue)(&c.WSAddr) }},
	{name: "admin-addr", usage: "HTTPS admin API listen address (empty disables)", value: func(c *Config) flag.Value { return (*stringValue)(&c.AdminAddr) }},
	{name: "http-addr", usage: "plain HTTP address for /healthz, /readyz and /metrics (empty disables)", value: func(c *Config) flag.Value { return (*stringValue)(&c.HTTPAddr) }},
	{name: "id-scope", usage: "DPS ID scope devices send in their username", value: func(c *Config) flag.Value { return (*stringValue)(&c.IDScope) }},
	{name: "redis-addr", usage: "Redis host:port; empty uses the embedded store in data-dir", value: func(c *Config) flag.Value { return (*stringValue)(&c.RedisAddr) }},
	{name: "redis-password", secret: true, value: func(c *Config) flag.Value { return (*stringValue)(&c.RedisPassword) }},
	{name: "redis-db", usage: "Redis logical database", value: func(c *Config) flag.Value { return (*intValue)(&c.RedisDB) }},
	{name: "tls-cert", usage: "server certificate chain (PEM); empty creates a development PKI in data-dir", value: func(c *Config) flag.Value { return (*stringValue)(&c.TLSCert) }},
	{name: "tls-key", usage: "server certificate key (PEM)", value: func(c *Config) flag.Value { return (*stringValue)(&c.TLSKey) }},
	{name: "dev-host", usage: "extra DNS name or IP for the development server certificate (repeatable)", value: func(c *Config) flag.Value { return &listValue{p: &c.DevHosts} }},
	{name: "hub", usage: "linked IoT hub HOST[=WEIGHT] (repeatable)", value: func(c *Config) flag.Value { return &hubsValue{p: &c.Hubs} }},
	{name: "service-ca", usage: "PEM file of CAs whose client certificates identify back-end event subscribers", value: func(c *Config) flag.Value { return (*stringValue)(&c.ServiceCA) }},
	{name: "admin-token", secret: true, value: func(c *Config) flag.Value { return (*stringValue)(&c.AdminToken) }},
	{name: "service-token", secret: true, value: func(c *Config) flag.Value { return (*stringValue)(&c.ServiceToken) }},
	{name: "admin-token-file", usage: "file holding the admin API bearer token (default: data-dir/admin-token, created on first run)", value: func(c *Config) flag.Value { return (*stringValue)(&c.AdminTokenFile) }},
	{name: "retry-after", usage: "retry-after of 202 and 429 responses (whole seconds)", value: func(c *Config) flag.Value { return (*durationValue)(&c.RetryAfter) }},
	{name: "request-timeout", usage: "bound on the work of one device request", value: func(c *Config) flag.Value { return (*durationValue)(&c.RequestTimeout) }},
	{name: "operation-ttl", usage: "how long a registration operation can be polled", value: func(c *Config) flag.Value { return (*durationValue)(&c.OperationTTL) }},
	{name: "tpm-challenge-ttl", usage: "how long a TPM device has to answer its challenge (single use)", value: func(c *Config) flag.Value { return (*durationValue)(&c.TPMChallengeTTL) }},
	{name: "max-packet-size", usage: "largest MQTT packet in bytes; a larger one closes that connection", value: func(c *Config) flag.Value { return (*intValue)(&c.MaxPacketSize) }},
	{name: "connect-timeout", usage: "close connections that have not sent CONNECT within this time", value: func(c *Config) flag.Value { return (*durationValue)(&c.ConnectTimeout) }},
	{name: "max-connections", usage: "cap on open connections over all listeners (0: none)", value: func(c *Config) flag.Value { return (*intValue)(&c.MaxConnections) }},
	{name: "max-connections-per-ip", usage: "cap on open connections per client IP (0: none; keep 0 behind a TCP load balancer)", value: func(c *Config) flag.Value { return (*intValue)(&c.MaxConnectionsPerIP) }},
	{name: "key-exchange", usage: "TLS 1.3 key exchange: default or hybrid (post-quantum X25519MLKEM768), x25519 or p256 (faster, not post-quantum)", value: func(c *Config) flag.Value { return (*stringValue)(&c.KeyExchange) }},
	{name: "session-tickets", usage: "allow TLS session resumption for returning devices", value: func(c *Config) flag.Value { return (*boolValue)(&c.SessionTickets) }},
	{name: "fast-path", usage: "answer register requests with the final 200 at once instead of 202 + poll (not for C# v2 SDK devices)", value: func(c *Config) flag.Value { return (*boolValue)(&c.FastPath) }},
	{name: "pprof", usage: "serve Go runtime profiles at /debug/pprof/ on http-addr (keep http-addr private)", value: func(c *Config) flag.Value { return (*boolValue)(&c.Pprof) }},
	{name: "shutdown-timeout", usage: "how long shutdown waits for live sessions to finish", value: func(c *Config) flag.Value { return (*durationValue)(&c.ShutdownTimeout) }},
	{name: "log-level", usage: "debug, info, warn or error", value: func(c *Config) flag.Value { return (*stringValue)(&c.LogLevel) }},
	{name: "log-format", usage: "text or json", value: func(c *Config) flag.Value { return (*stringValue)(&c.LogFormat) }},
}

// EnvPrefix starts every environment variable the broker reads.
const EnvPrefix = "DPSBROKER_"

// EnvName returns the environment variable of a setting: "admin-token"
// becomes DPSBROKER_ADMIN_TOKEN.
func EnvName(setting string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(setting, "-", "_"))
}

// RegisterFlags defines a flag for every non-secret setting, bound to c.
// Repeatable flags (--hub, --dev-host) replace the configured list on
// their first use, so that the command line wins over the file.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	for _, s := range settings {
		if s.secret {
			continue
		}
		fs.Var(s.value(c), s.name, s.usage)
	}
}

// ApplyEnv sets every setting whose DPSBROKER_ variable is present in env
// (os.LookupEnv in production). Lists are comma-separated. It reports
// every bad value at once.
func (c *Config) ApplyEnv(lookup func(string) (string, bool)) error {
	var errs []error
	for _, s := range settings {
		v, ok := lookup(EnvName(s.name))
		if !ok {
			continue
		}
		if err := s.value(c).Set(v); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", EnvName(s.name), err))
		}
	}
	return errors.Join(errs...)
}

// LoadFile reads a JSON configuration file whose keys are the flag names,
// for example {"mqtt-addr": ":8883", "hub": ["a.example.net=2"],
// "connect-timeout": "10s"}. Unknown keys and secrets are errors, all
// reported at once.
func (c *Config) LoadFile(path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config file: %w", err)
	}
	return c.loadJSON(data)
}

func (c *Config) loadJSON(data []byte) error {
	var raw map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&raw); err != nil {
		return fmt.Errorf("config file: %w", err)
	}
	byName := make(map[string]setting, len(settings))
	for _, s := range settings {
		byName[s.name] = s
	}
	keys := make([]string, 0, len(raw))
	for k := range raw {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var errs []error
	for _, k := range keys {
		s, ok := byName[k]
		switch {
		case !ok:
			errs = append(errs, fmt.Errorf("config file: unknown key %q", k))
			continue
		case s.secret:
			errs = append(errs, fmt.Errorf("config file: %q is a secret; set %s or use a *-file setting", k, EnvName(k)))
			continue
		}
		if err := setJSON(s.value(c), raw[k]); err != nil {
			errs = append(errs, fmt.Errorf("config file: %q: %w", k, err))
		}
	}
	return errors.Join(errs...)
}

// setJSON feeds a JSON scalar, or each element of an array, to v.Set.
func setJSON(v flag.Value, raw json.RawMessage) error {
	var list []json.RawMessage
	if err := json.Unmarshal(raw, &list); err == nil {
		if _, ok := v.(listSetter); !ok {
			return errors.New("a list is not allowed here")
		}
		v.(listSetter).reset()
		for _, e := range list {
			if err := setScalar(v, e); err != nil {
				return err
			}
		}
		return nil
	}
	return setScalar(v, raw)
}

func setScalar(v flag.Value, raw json.RawMessage) error {
	var x any
	if err := json.Unmarshal(raw, &x); err != nil {
		return err
	}
	switch t := x.(type) {
	case string:
		return v.Set(t)
	case bool:
		return v.Set(strconv.FormatBool(t))
	case float64:
		return v.Set(string(raw))
	default:
		return fmt.Errorf("want a string, number or boolean, got %s", raw)
	}
}

type stringValue string

func (s *stringValue) String() string     { return string(*s) }
func (s *stringValue) Set(v string) error { *s = stringValue(v); return nil }

type intValue int

func (i *intValue) String() string { return strconv.Itoa(int(*i)) }
func (i *intValue) Set(v string) error {
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil {
		return fmt.Errorf("%q is not an integer", v)
	}
	*i = intValue(n)
	return nil
}

type boolValue bool

func (b *boolValue) String() string   { return strconv.FormatBool(bool(*b)) }
func (b *boolValue) IsBoolFlag() bool { return true }
func (b *boolValue) Set(v string) error {
	x, err := strconv.ParseBool(strings.TrimSpace(v))
	if err != nil {
		return fmt.Errorf("%q is not a boolean", v)
	}
	*b = boolValue(x)
	return nil
}

type durationValue time.Duration

func (d *durationValue) String() string { return time.Duration(*d).String() }

// Set accepts Go durations ("10s", "1m30s"); a bare number means seconds,
// which is what people write in JSON.
func (d *durationValue) Set(v string) error {
	v = strings.TrimSpace(v)
	if n, err := strconv.ParseFloat(v, 64); err == nil {
		*d = durationValue(time.Duration(n * float64(time.Second)))
		return nil
	}
	x, err := time.ParseDuration(v)
	if err != nil {
		return fmt.Errorf("%q is not a duration such as 10s or 1m", v)
	}
	*d = durationValue(x)
	return nil
}

// listSetter is a repeatable value: the first Set of one source replaces
// what an earlier source gave, later ones append.
type listSetter interface{ reset() }

type listValue struct {
	p     *[]string
	fresh bool
}

func (l *listValue) String() string {
	if l.p == nil {
		return ""
	}
	return strings.Join(*l.p, ",")
}
func (l *listValue) reset() { *l.p = nil; l.fresh = true }
func (l *listValue) Set(v string) error {
	if !l.fresh {
		l.reset()
	}
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			*l.p = append(*l.p, p)
		}
	}
	return nil
}

type hubsValue struct {
	p     *HubList
	fresh bool
}

func (h *hubsValue) String() string {
	if h.p == nil {
		return ""
	}
	return h.p.String()
}
func (h *hubsValue) reset() { *h.p = nil; h.fresh = true }
func (h *hubsValue) Set(v string) error {
	if !h.fresh {
		h.reset()
	}
	hubs, err := parseHubs(v)
	*h.p = append(*h.p, hubs...)
	return err
}
