package broker

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/mochi-mqtt/server/v2/listeners"
)

// wssListener serves MQTT over secure WebSocket on every path. mochi's own
// WebSocket listener hands the hooks a connection that hides the TLS state,
// so X.509 devices could not attest over it; this one gives each session a
// net.Conn with a ConnectionState method (the peer chain as sent).
//
// Paths differ by SDK (C, Node and Python use /$iothub/websocket, Java
// none, C# "/"), so the path is ignored. The subprotocol is "mqtt" in any
// case; clients that offer none are accepted too.
type wssListener struct {
	id             string
	ln             net.Listener // guarded raw TCP listener
	tlsConfig      *tls.Config
	connectTimeout time.Duration
	log            *slog.Logger

	srv       *http.Server
	upgrader  websocket.Upgrader
	establish listeners.EstablishFn
	end       atomic.Bool
	closeOnce sync.Once
}

func newWSSListener(id string, ln net.Listener, tlsConfig *tls.Config, connectTimeout time.Duration) *wssListener {
	cfg := tlsConfig.Clone()
	// WebSocket upgrades need HTTP/1.1; never negotiate h2 here.
	cfg.NextProtos = []string{"http/1.1"}
	l := &wssListener{
		id:             id,
		ln:             ln,
		tlsConfig:      cfg,
		connectTimeout: connectTimeout,
		upgrader: websocket.Upgrader{
			HandshakeTimeout: connectTimeout,
			Subprotocols:     []string{"mqtt", "MQTT", "mqttv3.1"},
			// Devices are not browsers; there is no origin to check, and
			// authentication is the client certificate or SAS token.
			CheckOrigin: func(*http.Request) bool { return true },
		},
	}
	return l
}

// ID returns the listener's ID.
func (l *wssListener) ID() string { return l.id }

// Address returns the bound address.
func (l *wssListener) Address() string { return l.ln.Addr().String() }

// Protocol returns "wss".
func (l *wssListener) Protocol() string { return "wss" }

// Init prepares the HTTP server; the socket is already bound.
func (l *wssListener) Init(log *slog.Logger) error {
	l.log = log
	l.srv = &http.Server{
		Handler: http.HandlerFunc(l.handle),
		// Bounds the TLS handshake and the upgrade request; the session
		// itself runs on the hijacked connection with mochi's deadlines.
		ReadHeaderTimeout: l.connectTimeout,
		IdleTimeout:       l.connectTimeout,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	return nil
}

// Serve accepts connections until Close.
func (l *wssListener) Serve(establish listeners.EstablishFn) {
	l.establish = establish
	err := l.srv.Serve(tls.NewListener(l.ln, l.tlsConfig))
	if err != nil && !errors.Is(err, http.ErrServerClosed) && !l.end.Load() {
		l.log.Error("websocket listener stopped", "listener", l.id, "error", err)
	}
}

// Close stops accepting and asks mochi to close this listener's clients.
func (l *wssListener) Close(closeClients listeners.CloseFn) {
	l.closeOnce.Do(func() {
		l.end.Store(true)
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if l.srv != nil {
			_ = l.srv.Shutdown(ctx)
		} else {
			_ = l.ln.Close()
		}
	})
	closeClients(l.id)
}

func (l *wssListener) handle(w http.ResponseWriter, r *http.Request) {
	if !websocket.IsWebSocketUpgrade(r) {
		w.Header().Set("Upgrade", "websocket")
		http.Error(w, "this endpoint speaks MQTT over WebSocket only", http.StatusUpgradeRequired)
		return
	}
	ws, err := l.upgrader.Upgrade(w, r, nil)
	if err != nil {
		return // the upgrader has answered with an HTTP error
	}
	raw := ws.UnderlyingConn()
	// The HTTP server's deadlines end with the hijack; the device now has
	// connectTimeout to send CONNECT, then mochi's keepalive applies.
	_ = raw.SetDeadline(time.Now().Add(l.connectTimeout))
	var state tls.ConnectionState
	if r.TLS != nil {
		state = *r.TLS
	}
	conn := &wsConn{Conn: raw, ws: ws, state: state}
	defer conn.Close()
	if err := l.establish(l.id, conn); err != nil {
		l.log.Debug("websocket session ended", "listener", l.id, "remote", raw.RemoteAddr().String(), "error", err)
	}
}

// errTextFrame: MQTT over WebSocket uses binary frames only (MQTT 5 §6.0).
var errTextFrame = errors.New("websocket: text frame; MQTT needs binary frames")

// wsConn carries an MQTT byte stream in binary WebSocket messages. Reads
// span message boundaries (an MQTT packet may be split over messages or
// share one); each Write is one message, as mochi writes whole packets.
type wsConn struct {
	net.Conn // the hijacked *tls.Conn: addresses, deadlines, Close
	ws       *websocket.Conn
	state    tls.ConnectionState
	r        io.Reader
}

// ConnectionState returns the TLS state of the WebSocket's connection,
// with the client certificates exactly as the device sent them. Hooks read
// the peer chain through this method, as they do on *tls.Conn.
func (c *wsConn) ConnectionState() tls.ConnectionState { return c.state }

// NetConn returns the underlying TLS connection.
func (c *wsConn) NetConn() net.Conn { return c.Conn }

func (c *wsConn) Read(p []byte) (int, error) {
	for {
		if c.r == nil {
			typ, r, err := c.ws.NextReader()
			if err != nil {
				return 0, err
			}
			if typ != websocket.BinaryMessage {
				return 0, errTextFrame
			}
			c.r = r
		}
		n, err := c.r.Read(p)
		if errors.Is(err, io.EOF) {
			c.r = nil
			if n == 0 {
				continue // empty or finished message: read the next one
			}
			err = nil
		}
		return n, err
	}
}

func (c *wsConn) Write(p []byte) (int, error) {
	if err := c.ws.WriteMessage(websocket.BinaryMessage, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (c *wsConn) Close() error { return c.ws.Close() }
