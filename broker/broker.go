package broker

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"

	"github.com/dpsbroker/dpsbroker/broker/admin"
	"github.com/dpsbroker/dpsbroker/hooks"
	"github.com/dpsbroker/dpsbroker/provisioning"
	"github.com/dpsbroker/dpsbroker/provisioning/store/bolt"
	redisstore "github.com/dpsbroker/dpsbroker/provisioning/store/redis"
	"github.com/dpsbroker/dpsbroker/provisioning/tpmattest/tpmdecide"
	"github.com/dpsbroker/dpsbroker/provisioning/x509attest"
)

// Listener IDs, also the "listener" label of the connection metrics.
const (
	ListenerMQTT = "mqtts"
	ListenerWSS  = "wss"
)

// StoreFile is the embedded store's file name in DataDir.
const StoreFile = "dpsbroker.db"

// clientWritesPending sizes each connection's outbound queue. mochi's
// default (8192 slots, 64 KiB per connection) is for long-lived
// subscribers; a provisioning session receives four packets. Event
// subscribers that fall this far behind miss live events and catch up
// from the event log. 64 slots cost 512 B per connection.
const clientWritesPending = 64

// clientReadBufferSize sizes each connection's bufio.Reader. mochi's
// default is 2 KiB. Under TLS it buffers little: crypto/tls keeps the
// decrypted record and hands it out in reads of any size, and mochi reads
// a packet body of the buffer's size or more straight into its own slice.
// 64 B cost no measurable CPU against 512 B
// (BenchmarkProvisionX509) and save ~0.45 KB per idle connection
// (BenchmarkIdleConnectionMemory); 2 KiB would cost 2 KB more.
const clientReadBufferSize = 64

// Broker is a running dpsbroker: the store, the provisioning hooks on a
// mochi server, its listeners, the admin API and the metrics endpoint.
type Broker struct {
	cfg     Config
	log     *slog.Logger
	metrics *metrics

	store    provisioning.Store // metered; closes the real one
	srv      *mqtt.Server
	dps      *hooks.DPS
	limiter  *connLimiter
	tlsCfg   *tls.Config
	devPKI   *DevPKI
	token    tokenInfo
	mqttLn   net.Listener // guarded, nil when disabled
	wss      *wssListener
	adminLn  net.Listener
	adminSrv *http.Server
	httpLn   net.Listener
	httpSrv  *http.Server

	draining  atomic.Bool
	started   atomic.Bool
	watchStop context.CancelFunc
	watchDone chan struct{}
	runErr    chan error

	shutdownOnce sync.Once
	shutdownErr  error
	closeFns     []func() // undo New on failure, in reverse order
}

// tokenInfo says where the admin token came from, never what it is.
type tokenInfo struct {
	value   string
	file    string // "" when it came from the environment
	created bool
}

// New opens the store and binds every listener, so that configuration and
// port problems surface before Run. logger may be nil (slog.Default).
func New(ctx context.Context, cfg Config, logger *slog.Logger) (b *Broker, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("invalid configuration: %w", err)
	}
	if logger == nil {
		logger = slog.Default()
	}
	nb := &Broker{cfg: cfg, log: logger, metrics: newMetrics(), runErr: make(chan error, 4)}
	b = nb
	defer func() {
		// nb, not b: the error returns below have set b to nil.
		if err != nil {
			nb.undo()
		}
	}()
	b.limiter = newConnLimiter(cfg.MaxConnections, cfg.MaxConnectionsPerIP, b.metrics)

	if cfg.DataDir != "" {
		if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
			return nil, fmt.Errorf("data dir: %w", err)
		}
	}
	if err := b.setupTLS(); err != nil {
		return nil, err
	}
	if err := b.openStore(ctx); err != nil {
		return nil, err
	}
	if b.devPKI != nil && b.devPKI.Created {
		if err := b.devPKI.enrollDevGroup(ctx, b.store); err != nil {
			return nil, err
		}
	}
	if err := b.setupMQTT(); err != nil {
		return nil, err
	}
	if err := b.bindListeners(); err != nil {
		return nil, err
	}
	return b, nil
}

func (b *Broker) onUndo(f func()) { b.closeFns = append(b.closeFns, f) }

func (b *Broker) undo() {
	for i := len(b.closeFns) - 1; i >= 0; i-- {
		b.closeFns[i]()
	}
	b.closeFns = nil
}

// setupTLS loads the server certificate (or the development PKI) and
// builds the device-facing TLS configuration.
func (b *Broker) setupTLS() error {
	certFile, keyFile := b.cfg.TLSCert, b.cfg.TLSKey
	if certFile == "" {
		p, err := ensureDevPKI(filepath.Join(b.cfg.DataDir, "pki"), b.cfg.DevHosts)
		if err != nil {
			return err
		}
		b.devPKI = p
		certFile, keyFile = p.ServerCert, p.ServerKey
		if p.Created {
			b.log.Warn("created a development PKI: for development only; set tls-cert and tls-key in production", "dir", p.Dir)
		} else {
			b.log.Info("using the development PKI", "dir", p.Dir)
		}
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return fmt.Errorf("server certificate: %w", err)
	}
	b.tlsCfg = &tls.Config{
		Certificates: []tls.Certificate{cert},
		// Request, never verify: the X.509 decision (enrollments, chain
		// walk, precedence) happens in the connect hook, which answers
		// with a DPS reason code instead of a TLS alert. TPM and SAS
		// devices send no certificate at all.
		ClientAuth:             tls.RequestClientCert,
		MinVersion:             tls.VersionTLS12,
		SessionTicketsDisabled: !b.cfg.SessionTickets,
	}
	switch b.cfg.KeyExchange {
	case KeyExchangeX25519:
		b.tlsCfg.CurvePreferences = []tls.CurveID{tls.X25519}
	case KeyExchangeP256:
		b.tlsCfg.CurvePreferences = []tls.CurveID{tls.CurveP256}
	}
	return nil
}

// openStore opens Redis when configured, else the embedded store.
func (b *Broker) openStore(ctx context.Context) error {
	var st provisioning.Store
	if b.cfg.RedisAddr != "" {
		rs, err := redisstore.New(ctx, redisstore.Options{
			Addr:     b.cfg.RedisAddr,
			Password: b.cfg.RedisPassword,
			DB:       b.cfg.RedisDB,
			IDScope:  b.cfg.IDScope,
			Logger:   b.log.With("component", "store"),
			NodeID:   nodeName(),
		})
		if err != nil {
			return fmt.Errorf("redis store at %s: %w", b.cfg.RedisAddr, err)
		}
		st = rs
		b.log.Info("store: redis", "addr", b.cfg.RedisAddr, "db", b.cfg.RedisDB)
	} else {
		path := filepath.Join(b.cfg.DataDir, StoreFile)
		bs, err := bolt.Open(path, bolt.Options{Logger: b.log.With("component", "store")})
		if err != nil {
			return fmt.Errorf("embedded store: %w", err)
		}
		st = bs
		b.log.Info("store: embedded", "path", path)
	}
	b.store = b.metrics.meter(st)
	b.onUndo(func() { _ = st.Close() })
	return nil
}

// setupMQTT builds the mochi server with the provisioning hooks.
func (b *Broker) setupMQTT() error {
	caps := mqtt.NewDefaultServerCapabilities()
	caps.MaximumClientWritesPending = clientWritesPending
	caps.MinimumProtocolVersion = 4
	caps.MaximumPacketSize = uint32(b.cfg.MaxPacketSize)
	caps.MaximumQos = 1
	caps.RetainAvailable = 0
	// Devices keep one request in flight; a small receive window bounds
	// what one connection can queue.
	caps.ReceiveMaximum = 16
	caps.MaximumClients = math.MaxInt64
	if b.cfg.MaxConnections > 0 {
		caps.MaximumClients = int64(b.cfg.MaxConnections)
	}
	mochiLevel := slog.LevelError
	if lvl, _ := parseLevel(b.cfg.LogLevel); lvl <= slog.LevelDebug {
		mochiLevel = slog.LevelDebug
	}
	srv := mqtt.New(&mqtt.Options{
		InlineClient: true,
		Capabilities: caps,
		// $SYS topics are of no use to devices; publishing them every
		// second costs CPU on every broker.
		SysTopicResendInterval:  3600,
		ClientNetReadBufferSize: clientReadBufferSize,
		Logger:                  slog.New(levelFilter{h: b.log.Handler(), min: mochiLevel}).With("component", "mqtt"),
	})
	b.srv = srv

	eval := x509attest.New(b.store, x509attest.Options{Logger: b.log.With("component", "x509")})
	alloc, err := provisioning.NewAllocator(b.cfg.Hubs)
	if err != nil {
		return err
	}
	svc, err := provisioning.NewService(provisioning.ServiceOptions{
		Registrations: b.store,
		Operations:    b.store,
		Events:        b.store,
		Allocator:     alloc,
		OperationTTL:  b.cfg.OperationTTL,
		Node:          nodeName(),
		Logger:        b.log.With("component", "provisioning"),
		// Every result and refusal is announced here once, whichever
		// store path wrote it: the place to count them.
		Publish: func(ev *provisioning.Event) {
			b.metrics.event(ev)
			_ = hooks.PublishEvent(srv, ev)
		},
	})
	if err != nil {
		return err
	}
	var serviceCAs *x509.CertPool
	if b.cfg.ServiceCA != "" {
		pem, err := os.ReadFile(b.cfg.ServiceCA)
		if err != nil {
			return fmt.Errorf("service-ca: %w", err)
		}
		serviceCAs = x509.NewCertPool()
		if !serviceCAs.AppendCertsFromPEM(pem) {
			return fmt.Errorf("service-ca %s: no PEM certificate", b.cfg.ServiceCA)
		}
	}
	// TPM devices are decided by their EK: individually, or by a TPM group
	// through the evaluator's chain walk over their EK certificate.
	tpm, err := tpmdecide.New(b.store, tpmdecide.Options{
		Challenges:   b.store,
		Groups:       eval,
		ChallengeTTL: b.cfg.TPMChallengeTTL,
	})
	if err != nil {
		return err
	}
	dps, err := hooks.New(srv, hooks.Options{
		IDScope:        b.cfg.IDScope,
		Decider:        &timedDecider{d: eval, m: b.metrics},
		Registrar:      svc,
		TPM:            tpm,
		RetryAfter:     b.cfg.RetryAfter,
		MaxPacketSize:  b.cfg.MaxPacketSize,
		RequestTimeout: b.cfg.RequestTimeout,
		FastPath:       b.cfg.FastPath,
		ServiceCAs:     serviceCAs,
		ServiceToken:   b.cfg.ServiceToken,
		Logger:         b.log.With("component", "hooks"),
	})
	if err != nil {
		return err
	}
	if err := srv.AddHook(dps, nil); err != nil {
		return err
	}
	b.dps = dps
	return nil
}

// bindListeners opens every socket.
func (b *Broker) bindListeners() error {
	listen := func(addr string) (net.Listener, error) {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, err
		}
		b.onUndo(func() { _ = ln.Close() })
		return ln, nil
	}
	guard := func(ln net.Listener, name string) *guardedListener {
		return &guardedListener{
			Listener: ln, name: name, limiter: b.limiter, deadline: b.cfg.ConnectTimeout,
			log: b.log, metrics: b.metrics,
		}
	}
	if b.cfg.MQTTAddr != "" {
		ln, err := listen(b.cfg.MQTTAddr)
		if err != nil {
			return fmt.Errorf("mqtt-addr: %w", err)
		}
		b.mqttLn = guard(ln, ListenerMQTT)
		if err := b.srv.AddListener(listeners.NewNet(ListenerMQTT, tls.NewListener(b.mqttLn, b.tlsCfg))); err != nil {
			return err
		}
	}
	if b.cfg.WSAddr != "" {
		ln, err := listen(b.cfg.WSAddr)
		if err != nil {
			return fmt.Errorf("ws-addr: %w", err)
		}
		b.wss = newWSSListener(ListenerWSS, guard(ln, ListenerWSS), b.tlsCfg, b.cfg.ConnectTimeout)
		if err := b.srv.AddListener(b.wss); err != nil {
			return err
		}
	}
	if b.cfg.AdminAddr != "" {
		tok, err := b.adminToken()
		if err != nil {
			return err
		}
		b.token = tok
		h, err := admin.NewHandler(admin.Options{Store: b.store, Token: tok.value, Logger: b.log.With("component", "admin")})
		if err != nil {
			return err
		}
		ln, err := listen(b.cfg.AdminAddr)
		if err != nil {
			return fmt.Errorf("admin-addr: %w", err)
		}
		acfg := b.tlsCfg.Clone()
		acfg.ClientAuth = tls.NoClientCert
		acfg.CurvePreferences = nil
		b.adminLn = ln
		b.adminSrv = &http.Server{
			Handler:           h,
			TLSConfig:         acfg,
			ReadHeaderTimeout: 10 * time.Second,
			ReadTimeout:       time.Minute,
			WriteTimeout:      time.Minute,
			IdleTimeout:       2 * time.Minute,
			ErrorLog:          slog.NewLogLogger(b.log.Handler(), slog.LevelDebug),
		}
	}
	if b.cfg.HTTPAddr != "" {
		ln, err := listen(b.cfg.HTTPAddr)
		if err != nil {
			return fmt.Errorf("http-addr: %w", err)
		}
		b.httpLn = ln
		b.httpSrv = &http.Server{
			Handler:           b.opsHandler(),
			ReadHeaderTimeout: 10 * time.Second,
			WriteTimeout:      time.Minute,
			ErrorLog:          slog.NewLogLogger(b.log.Handler(), slog.LevelDebug),
		}
	}
	return nil
}

// adminToken returns the configured token, or the one in the token file,
// creating it on first run.
func (b *Broker) adminToken() (tokenInfo, error) {
	if b.cfg.AdminToken != "" {
		return tokenInfo{value: b.cfg.AdminToken}, nil
	}
	path := b.cfg.AdminTokenFile
	if path == "" {
		path = filepath.Join(b.cfg.DataDir, "admin-token")
	}
	t, created, err := loadOrCreateToken(path)
	if err != nil {
		return tokenInfo{}, err
	}
	if created {
		b.log.Warn("created an admin API token; it is in the file, readable by this user only", "file", path)
	}
	return tokenInfo{value: t, file: path, created: created}, nil
}

// Run serves until ctx ends, then shuts down gracefully (bounded by
// ShutdownTimeout). It returns the first serving error, or nil after a
// clean shutdown.
func (b *Broker) Run(ctx context.Context) error {
	if err := b.Start(); err != nil {
		_ = b.Shutdown(ctx)
		return err
	}
	var err error
	select {
	case <-ctx.Done():
	case err = <-b.runErr:
		b.log.Error("serving failed; shutting down", "error", err)
	}
	sctx, cancel := context.WithTimeout(context.Background(), b.cfg.ShutdownTimeout+b.cfg.RequestTimeout+5*time.Second)
	defer cancel()
	if serr := b.Shutdown(sctx); err == nil {
		err = serr
	}
	return err
}

// Start begins serving and returns at once; stop with Shutdown. Run is
// Start plus waiting for a signal.
func (b *Broker) Start() error {
	if !b.started.CompareAndSwap(false, true) {
		return errors.New("broker: already started")
	}
	if err := b.srv.Serve(); err != nil {
		b.started.Store(false) // nothing runs yet: Shutdown only releases
		return err
	}
	wctx, stop := context.WithCancel(context.Background())
	b.watchStop = stop
	b.watchDone = make(chan struct{})
	go b.watch(wctx)
	serve := func(name string, f func() error) {
		go func() {
			if err := f(); err != nil && !errors.Is(err, http.ErrServerClosed) {
				b.runErr <- fmt.Errorf("%s: %w", name, err)
			}
		}()
	}
	if b.adminSrv != nil {
		serve("admin API", func() error { return b.adminSrv.ServeTLS(b.adminLn, "", "") })
	}
	if b.httpSrv != nil {
		serve("http", func() error { return b.httpSrv.Serve(b.httpLn) })
	}
	b.log.Info("dpsbroker serving",
		"idScope", b.cfg.IDScope, "mqtt", b.MQTTAddr(), "wss", b.WSAddr(),
		"admin", b.AdminAddr(), "http", b.HTTPAddr(), "keyExchange", b.cfg.KeyExchange)
	return nil
}

// Shutdown stops accepting connections, waits (bounded by ctx and
// ShutdownTimeout) for live sessions to end so that registrations in
// flight complete, then closes every session, the servers and the store.
// A registration is acknowledged only after its record and operation are
// written, so a session cut at the deadline loses nothing it was told.
func (b *Broker) Shutdown(ctx context.Context) error {
	b.shutdownOnce.Do(func() { b.shutdownErr = b.shutdown(ctx) })
	return b.shutdownErr
}

func (b *Broker) shutdown(ctx context.Context) error {
	b.draining.Store(true)
	if !b.started.Load() {
		b.undo()
		return nil
	}
	b.log.Info("shutting down: no new connections; waiting for live sessions", "open", b.limiter.Open(), "timeout", b.cfg.ShutdownTimeout)
	idle := b.limiter.drain()
	if b.mqttLn != nil {
		_ = b.mqttLn.Close() // mochi's accept loop ends; its sessions stay
	}
	if b.wss != nil && b.wss.srv != nil {
		b.wss.end.Store(true)
		// Shutdown leaves hijacked connections (the MQTT sessions) alone.
		sctx, cancel := context.WithTimeout(ctx, time.Second)
		_ = b.wss.srv.Shutdown(sctx)
		cancel()
	}
	drainCtx, cancel := context.WithTimeout(ctx, b.cfg.ShutdownTimeout)
	select {
	case <-idle:
	case <-drainCtx.Done():
		b.log.Warn("shutdown timeout: closing the remaining sessions", "open", b.limiter.Open())
	}
	cancel()

	_ = b.srv.Close() // disconnects what is left
	// A request that was being handled when its connection was closed
	// still finishes its store work (bounded by RequestTimeout) before its
	// read loop returns; wait for that before closing the store.
	waitGroup(ctx, &b.srv.Listeners.ClientsWg, b.cfg.RequestTimeout+time.Second)

	var errs []error
	for _, s := range []*http.Server{b.adminSrv, b.httpSrv} {
		if s == nil {
			continue
		}
		if err := s.Shutdown(ctx); err != nil {
			errs = append(errs, err)
			_ = s.Close()
		}
	}
	b.watchStop()
	<-b.watchDone
	if err := b.store.Close(); err != nil {
		errs = append(errs, fmt.Errorf("close store: %w", err))
	}
	b.closeFns = nil // everything is closed
	b.log.Info("dpsbroker stopped")
	return errors.Join(errs...)
}

// waitGroup waits for wg, at most d or until ctx ends.
func waitGroup(ctx context.Context, wg *sync.WaitGroup, d time.Duration) {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
	case <-ctx.Done():
	}
}

// watch follows the store's change feed and disconnects live sessions
// that a change may no longer admit (DESIGN §6): a changed individual
// enrollment disconnects that device (it reconnects and is decided
// afresh); group, CA and "everything" changes re-decide every live X.509
// session, since a new disabled group on an intermediate must cut devices
// admitted through the root. Bursts are coalesced into one recheck.
func (b *Broker) watch(ctx context.Context) {
	defer close(b.watchDone)
	changes := b.store.WatchChanges(ctx)
	const coalesce = 50 * time.Millisecond
	var timer <-chan time.Time
	pending := false
	for {
		select {
		case ch, ok := <-changes:
			if !ok {
				if ctx.Err() == nil {
					b.log.Error("store change feed closed; live sessions are no longer rechecked")
				}
				return
			}
			switch ch.Kind {
			case provisioning.ChangeEnrollment:
				if n := b.dps.DisconnectRegistration(ch.ID); n > 0 {
					b.metrics.disconnected.WithLabelValues("enrollment").Add(float64(n))
				}
			default:
				if !pending {
					pending = true
					timer = time.After(coalesce)
				}
			}
		case <-timer:
			pending, timer = false, nil
			rctx, cancel := context.WithTimeout(ctx, time.Minute)
			if n := b.dps.Recheck(rctx); n > 0 {
				b.metrics.disconnected.WithLabelValues("recheck").Add(float64(n))
			}
			cancel()
		case <-ctx.Done():
			return
		}
	}
}

// nodeName identifies this process in events.
func nodeName() string {
	h, err := os.Hostname()
	if err != nil {
		h = "unknown"
	}
	return fmt.Sprintf("%s/%d", h, os.Getpid())
}

// timedDecider feeds the decision latency histogram.
type timedDecider struct {
	d hooks.X509Decider
	m *metrics
}

func (t *timedDecider) Decide(ctx context.Context, chain []*x509.Certificate) (*x509attest.Decision, error) {
	start := time.Now()
	dec, err := t.d.Decide(ctx, chain)
	result := "error"
	if err == nil {
		result = dec.Outcome.String()
	}
	t.m.observeDecision(result, time.Since(start))
	return dec, err
}

// levelFilter drops records below min, so that mochi's per-connection
// warnings (every failed handshake) stay out of production logs.
type levelFilter struct {
	h   slog.Handler
	min slog.Level
}

func (f levelFilter) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= f.min && f.h.Enabled(ctx, l)
}
func (f levelFilter) Handle(ctx context.Context, r slog.Record) error { return f.h.Handle(ctx, r) }
func (f levelFilter) WithAttrs(a []slog.Attr) slog.Handler {
	return levelFilter{h: f.h.WithAttrs(a), min: f.min}
}
func (f levelFilter) WithGroup(n string) slog.Handler {
	return levelFilter{h: f.h.WithGroup(n), min: f.min}
}

// Config returns the configuration the broker runs with.
func (b *Broker) Config() Config { return b.cfg }

// MQTTAddr returns the bound MQTT-over-TLS address ("" when disabled).
func (b *Broker) MQTTAddr() string { return addrOf(b.mqttLn) }

// WSAddr returns the bound secure WebSocket address ("" when disabled).
func (b *Broker) WSAddr() string {
	if b.wss == nil {
		return ""
	}
	return b.wss.Address()
}

// AdminAddr returns the bound admin API address ("" when disabled).
func (b *Broker) AdminAddr() string { return addrOf(b.adminLn) }

// HTTPAddr returns the bound health and metrics address ("" when disabled).
func (b *Broker) HTTPAddr() string { return addrOf(b.httpLn) }

// DevPKI returns the development PKI, or nil when a server certificate
// was configured.
func (b *Broker) DevPKI() *DevPKI { return b.devPKI }

// AdminTokenFile returns the file holding the admin token, "" when it came
// from the environment; created reports whether this run wrote it.
func (b *Broker) AdminTokenFile() (path string, created bool) {
	return b.token.file, b.token.created
}

// Store returns the store the broker uses (for embedding programs and
// tests; changes made through it reach live sessions like admin API ones).
func (b *Broker) Store() provisioning.Store { return b.store }

// Hooks returns the provisioning hook.
func (b *Broker) Hooks() *hooks.DPS { return b.dps }

// MQTTServer returns the embedded mochi server.
func (b *Broker) MQTTServer() *mqtt.Server { return b.srv }

// TLSConfig returns a copy of the device-facing server TLS configuration.
func (b *Broker) TLSConfig() *tls.Config { return b.tlsCfg.Clone() }

func addrOf(ln net.Listener) string {
	if ln == nil {
		return ""
	}
	return ln.Addr().String()
}
