// Package admintest runs the real admin API over HTTPS on the embedded
// store, for the tests of the admin handler, its Go client and dpsctl.
package admintest

import (
	"bytes"
	"encoding/pem"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/dpsbroker/dpsbroker/broker/admin"
	"github.com/dpsbroker/dpsbroker/provisioning/store/bolt"
)

// Token is the bearer token of every test server.
const Token = "test-admin-token-0123456789"

// Server is a running admin API.
type Server struct {
	// URL is the https base URL.
	URL string
	// Token is the bearer token the server accepts.
	Token string
	// CAFile is a PEM file with the server's certificate, to trust it.
	CAFile string
	// Client is an HTTPS client that trusts the server.
	Client *http.Client
	// Store is the store behind the API, for arranging and checking state.
	Store *bolt.Store

	logs *syncBuffer
}

// Options tweak the server; the zero value is the usual setup.
type Options struct {
	// MaxBodyBytes is passed to admin.Options.
	MaxBodyBytes int64
	// NoToken starts the server without a token (it refuses everything).
	NoToken bool
}

// Start runs the admin API on a fresh bolt store in t.TempDir and stops it
// when the test ends.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	dir := t.TempDir()
	st, err := bolt.Open(filepath.Join(dir, "dps.db"), bolt.Options{})
	if err != nil {
		t.Fatalf("open bolt store: %v", err)
	}
	t.Cleanup(func() { _ = st.Close() })

	logs := &syncBuffer{}
	token := Token
	if opts.NoToken {
		token = ""
	}
	h, err := admin.NewHandler(admin.Options{
		Store:        st,
		Token:        token,
		Logger:       slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		MaxBodyBytes: opts.MaxBodyBytes,
	})
	if err != nil {
		t.Fatalf("admin.NewHandler: %v", err)
	}
	srv := httptest.NewUnstartedServer(h)
	srv.StartTLS()
	t.Cleanup(srv.Close)

	caFile := filepath.Join(dir, "server-ca.pem")
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	if err := os.WriteFile(caFile, pemBytes, 0o600); err != nil {
		t.Fatalf("write CA file: %v", err)
	}
	return &Server{URL: srv.URL, Token: Token, CAFile: caFile, Client: srv.Client(), Store: st, logs: logs}
}

// Logs returns what the handler logged so far (JSON lines).
func (s *Server) Logs() string { return s.logs.String() }

// syncBuffer is a bytes.Buffer safe for the concurrent writes of handlers.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
