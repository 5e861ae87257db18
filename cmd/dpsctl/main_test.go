package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dpsbroker/dpsbroker/broker/admin/admintest"
	"github.com/dpsbroker/dpsbroker/provisioning"
	"github.com/dpsbroker/dpsbroker/provisioning/pkitest"
)

// cli runs dpsctl in-process against one admin server.
type cli struct {
	t   *testing.T
	srv *admintest.Server
	dir string
}

func newCLI(t *testing.T) *cli {
	t.Setenv(envServer, "")
	t.Setenv(envToken, "")
	return &cli{t: t, srv: admintest.Start(t, admintest.Options{}), dir: t.TempDir()}
}

// run runs dpsctl with the connection flags prepended.
func (c *cli) run(args ...string) (stdout, stderr string, code int) {
	c.t.Helper()
	full := append([]string{"--server", c.srv.URL, "--ca-file", c.srv.CAFile, "--token", c.srv.Token}, args...)
	return runRaw(full...)
}

func runRaw(args ...string) (string, string, int) {
	var out, errOut bytes.Buffer
	code := run(args, &out, &errOut)
	return out.String(), errOut.String(), code
}

// ok runs and requires success.
func (c *cli) ok(args ...string) string {
	c.t.Helper()
	out, errOut, code := c.run(args...)
	if code != exitOK {
		c.t.Fatalf("dpsctl %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

// fails runs and requires the exit code and a piece of stderr.
func (c *cli) fails(code int, stderrHas string, args ...string) {
	c.t.Helper()
	out, errOut, got := c.run(args...)
	if got != code || !strings.Contains(errOut, stderrHas) {
		c.t.Fatalf("dpsctl %s: exit %d (want %d)\nstdout: %s\nstderr: %s (want %q)", strings.Join(args, " "), got, code, out, errOut, stderrHas)
	}
}

// file writes content into the test directory and returns its path.
func (c *cli) file(name string, content []byte) string {
	c.t.Helper()
	p := filepath.Join(c.dir, name)
	if err := os.WriteFile(p, content, 0o600); err != nil {
		c.t.Fatal(err)
	}
	return p
}

func decode[T any](t *testing.T, s string) T {
	t.Helper()
	var v T
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatalf("decode %q: %v", s, err)
	}
	return v
}

func TestEnrollmentCommands(t *testing.T) {
	c := newCLI(t)
	root, err := pkitest.NewRootCA("CLI Root")
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := root.NewLeaf("dev-1")
	if err != nil {
		t.Fatal(err)
	}
	cert := c.file("dev-1.pem", pkitest.CertPEM(leaf.Cert))

	out := c.ok("enrollment", "create", "--id", "dev-1", "--cert", cert, "--hub", "hub1.example.com", "--policy", "static", "--device-id", "device-one")
	e := decode[provisioning.IndividualEnrollment](t, out)
	if e.RegistrationID != "dev-1" || e.DeviceID != "device-one" || e.ETag == "" || e.Attestation.X509.ClientCertificates.Primary.Info == nil ||
		e.AllocationPolicy != provisioning.AllocationStatic || len(e.IoTHubs) != 1 {
		t.Fatalf("created: %s", out)
	}
	c.fails(exitError, "already exists", "enrollment", "create", "--id", "dev-1", "--cert", cert)
	c.ok("enrollment", "create", "--id", "dev-1", "--cert", cert, "--replace")

	if got := decode[provisioning.IndividualEnrollment](t, c.ok("enrollment", "show", "dev-1")); got.RegistrationID != "dev-1" {
		t.Fatalf("show: %+v", got)
	}
	if out := c.ok("enrollment", "show", "dev-1", "-o", "table"); !strings.Contains(out, "REGISTRATION ID") || !strings.Contains(out, "dev-1") {
		t.Fatalf("show table: %s", out)
	}

	out = c.ok("enrollment", "create", "--id", "sym-1", "--symmetric-key", "--disabled", "--edge")
	sym := decode[provisioning.IndividualEnrollment](t, out)
	if sym.Attestation.SymmetricKey == nil || sym.Attestation.SymmetricKey.PrimaryKey == "" || sym.Enabled() || sym.Capabilities == nil {
		t.Fatalf("symmetric: %s", out)
	}
	out = c.ok("enrollment", "list")
	if !strings.Contains(out, "REGISTRATION ID") || !strings.Contains(out, "dev-1") || !strings.Contains(out, "sym-1") || !strings.Contains(out, "disabled") {
		t.Fatalf("list: %s", out)
	}
	// Global flags also work after the verb.
	if list := decode[[]provisioning.IndividualEnrollment](t, c.ok("enrollment", "list", "-o", "json")); len(list) != 2 {
		t.Fatalf("list json: %d", len(list))
	}

	if out := c.ok("enrollment", "disable", "dev-1"); !strings.Contains(out, "disabled") {
		t.Fatalf("disable: %s", out)
	}
	if got := decode[provisioning.IndividualEnrollment](t, c.ok("enrollment", "show", "dev-1")); got.Enabled() {
		t.Fatal("still enabled")
	}
	c.ok("enrollment", "enable", "dev-1")
	if got := decode[provisioning.IndividualEnrollment](t, c.ok("enrollment", "show", "dev-1")); !got.Enabled() || got.Attestation.X509 == nil {
		t.Fatalf("enable lost data: %+v", got)
	}

	// The server's validation message reaches the user.
	bad := c.file("bad.pem", []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"))
	c.fails(exitError, "attestation.x509.clientCertificates.primary.certificate", "enrollment", "create", "--id", "dev-2", "--cert", bad)
	other, err := root.NewLeaf("someone-else")
	if err != nil {
		t.Fatal(err)
	}
	c.fails(exitError, "does not match registrationId", "enrollment", "create", "--id", "dev-3", "--cert", c.file("o.pem", pkitest.CertPEM(other.Cert)))
	c.fails(exitError, "no such file", "enrollment", "create", "--id", "dev-3", "--cert", filepath.Join(c.dir, "missing.pem"))

	c.fails(exitError, "If-Match", "enrollment", "delete", "dev-1", "--etag", "old")
	if out := c.ok("enrollment", "delete", "dev-1"); !strings.Contains(out, "deleted") {
		t.Fatalf("delete: %s", out)
	}
	c.fails(exitError, "not found", "enrollment", "show", "dev-1")
	c.fails(exitError, "404201", "enrollment", "disable", "dev-1")
}

func TestGroupCAAndRegistrationCommands(t *testing.T) {
	c := newCLI(t)
	root, err := pkitest.NewRootCA("CLI Root")
	if err != nil {
		t.Fatal(err)
	}
	inter, err := root.NewIntermediate("CLI Intermediate")
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := inter.NewLeaf("dev-1")
	if err != nil {
		t.Fatal(err)
	}
	interPEM := c.file("inter.pem", pkitest.CertPEM(inter.Cert))
	rootPEM := c.file("root.pem", pkitest.CertPEM(root.Cert))

	out := c.ok("group", "create", "--id", "g1", "--cert", interPEM, "--hub", "hub1.example.com")
	if g := decode[provisioning.EnrollmentGroup](t, out); g.Attestation.X509.SigningCertificates.Primary.Info == nil {
		t.Fatalf("group: %s", out)
	}
	out = c.ok("group", "create", "--id", "tpm-fleet", "--tpm", "--cert", rootPEM)
	if g := decode[provisioning.EnrollmentGroup](t, out); g.Attestation.Type != provisioning.AttestationTPM || g.Attestation.X509 == nil {
		t.Fatalf("TPM group: %s", out)
	}
	c.fails(exitUsage, "--tpm needs the manufacturer CA", "group", "create", "--id", "t2", "--tpm", "--symmetric-key")
	c.fails(exitError, "not a CA", "group", "create", "--id", "g2", "--cert", c.file("leaf.pem", pkitest.CertPEM(leaf.Cert)))
	c.fails(exitError, "not uploaded", "group", "create", "--id", "g3", "--ca-ref", "rootca")

	// CA proof of possession, end to end.
	out = c.ok("ca", "upload", "--name", "rootca", "--cert", rootPEM)
	if ca := decode[provisioning.CACertificate](t, out); ca.IsVerified || ca.Thumbprint == "" {
		t.Fatalf("upload: %s", out)
	}
	c.fails(exitError, "not verified", "group", "create", "--id", "g3", "--ca-ref", "rootca")
	code := strings.TrimSpace(c.ok("ca", "verification-code", "rootca"))
	wrong, err := root.NewLeaf("not-the-code")
	if err != nil {
		t.Fatal(err)
	}
	c.fails(exitError, "verification code", "ca", "verify", "rootca", "--cert", c.file("wrong.pem", pkitest.CertPEM(wrong.Cert)))
	proof, err := root.NewLeaf(code)
	if err != nil {
		t.Fatal(err)
	}
	if out := c.ok("ca", "verify", "rootca", "--cert", c.file("proof.pem", pkitest.CertPEM(proof.Cert))); !strings.Contains(out, "verified") {
		t.Fatalf("verify: %s", out)
	}
	if out := c.ok("ca", "list"); !strings.Contains(out, "rootca") || !strings.Contains(out, "true") {
		t.Fatalf("ca list: %s", out)
	}
	if ca := decode[provisioning.CACertificate](t, c.ok("ca", "show", "rootca")); !ca.IsVerified {
		t.Fatalf("ca show: %+v", ca)
	}
	c.ok("group", "create", "--id", "g3", "--ca-ref", "rootca")
	out = c.ok("group", "list")
	if !strings.Contains(out, "ca:rootca") || !strings.Contains(out, "CLI Intermediate") {
		t.Fatalf("group list: %s", out)
	}
	c.ok("group", "disable", "g1")
	if g := decode[provisioning.EnrollmentGroup](t, c.ok("group", "show", "g1")); g.Enabled() {
		t.Fatal("group still enabled")
	}
	c.ok("group", "enable", "g1")
	c.ok("group", "delete", "g3")
	c.fails(exitError, "not found", "group", "show", "g3")
	c.ok("ca", "upload", "--name", "selfattested", "--cert", rootPEM, "--verified")
	c.fails(exitError, "already exists", "ca", "upload", "--name", "selfattested", "--cert", rootPEM)
	c.ok("ca", "delete", "selfattested")

	// Registration records.
	for _, r := range []struct{ id, group string }{{"dev-1", "g1"}, {"dev-2", "g1"}, {"dev-3", "g9"}} {
		if _, err := c.srv.Store.PutRegistration(t.Context(), &provisioning.RegistrationState{RegistrationID: r.id,
			Status: provisioning.RegistrationAssigned, AssignedHub: "hub1.example.com", DeviceID: r.id, EnrollmentGroupID: r.group}, ""); err != nil {
			t.Fatal(err)
		}
	}
	out = c.ok("registration", "list", "--group", "g1")
	if !strings.Contains(out, "dev-1") || !strings.Contains(out, "dev-2") || strings.Contains(out, "dev-3") {
		t.Fatalf("registration list: %s", out)
	}
	if all := decode[[]provisioning.RegistrationState](t, c.ok("registration", "list", "-o", "json")); len(all) != 3 {
		t.Fatalf("all registrations: %d", len(all))
	}
	if r := decode[provisioning.RegistrationState](t, c.ok("registration", "show", "dev-1")); r.AssignedHub != "hub1.example.com" {
		t.Fatalf("registration show: %+v", r)
	}
	c.ok("registration", "delete", "dev-1")
	c.fails(exitError, "404202", "registration", "show", "dev-1")
}

func TestUsageAndConnectionErrors(t *testing.T) {
	c := newCLI(t)
	usage := []struct {
		name string
		args []string
		has  string
	}{
		{"unknown command", []string{"frobnicate"}, "unknown command"},
		{"missing subcommand", []string{"enrollment"}, "needs a subcommand"},
		{"unknown subcommand", []string{"enrollment", "explode"}, "unknown subcommand"},
		{"missing id", []string{"enrollment", "create", "--symmetric-key"}, "--id is required"},
		{"no attestation", []string{"enrollment", "create", "--id", "x"}, "exactly one attestation"},
		{"two attestations", []string{"enrollment", "create", "--id", "x", "--symmetric-key", "--tpm-ek", "AAAA"}, "exactly one attestation"},
		{"group with two attestations", []string{"group", "create", "--id", "g", "--ca-ref", "a", "--symmetric-key"}, "exactly one attestation"},
		{"show without id", []string{"enrollment", "show"}, "expected ID"},
		{"show with two ids", []string{"enrollment", "show", "a", "b"}, "expected ID"},
		{"list with an argument", []string{"group", "list", "x"}, "unexpected argument"},
		{"unknown flag", []string{"enrollment", "list", "--frob"}, "flag provided but not defined"},
		{"bad output format", []string{"enrollment", "list", "-o", "yaml"}, "use json or table"},
		{"plain http", []string{"--server", "http://127.0.0.1:1", "enrollment", "list"}, "https only"},
		{"ca upload without cert", []string{"ca", "upload", "--name", "x"}, "--name and --cert are required"},
		{"verify without cert", []string{"ca", "verify", "x"}, "--cert is required"},
	}
	for _, u := range usage {
		t.Run(u.name, func(t *testing.T) { c.fails(exitUsage, u.has, u.args...) })
	}
	if _, errOut, code := runRaw(); code != exitUsage || !strings.Contains(errOut, "usage:") {
		t.Fatalf("no args: %d %s", code, errOut)
	}
	if out, _, code := runRaw("help"); code != exitOK || !strings.Contains(out, "enrollment create") || !strings.Contains(out, "ca verification-code") {
		t.Fatalf("help: %d %s", code, out)
	}
	if out, _, code := runRaw("enrollment", "create", "-h"); code != exitOK || !strings.Contains(out, "--id ID") {
		t.Fatalf("subcommand help: %d %s", code, out)
	}
	// No token anywhere: a usage error before any request.
	if _, errOut, code := runRaw("--server", c.srv.URL, "--ca-file", c.srv.CAFile, "enrollment", "list"); code != exitUsage || !strings.Contains(errOut, envToken) {
		t.Fatalf("no token: %d %s", code, errOut)
	}
	// The environment supplies server and token; --token-file overrides.
	t.Setenv(envServer, c.srv.URL)
	t.Setenv(envToken, c.srv.Token)
	if _, errOut, code := runRaw("--ca-file", c.srv.CAFile, "enrollment", "list"); code != exitOK {
		t.Fatalf("env: %d %s", code, errOut)
	}
	wrong := c.file("token", []byte("wrong-token\n"))
	if _, errOut, code := runRaw("--ca-file", c.srv.CAFile, "--token-file", wrong, "enrollment", "list"); code != exitError || !strings.Contains(errOut, "bearer token") {
		t.Fatalf("wrong token: %d %s", code, errOut)
	}
	// Without the server's CA the TLS handshake fails: exit 1, not a hang.
	if _, errOut, code := runRaw("enrollment", "list"); code != exitError || !strings.Contains(errOut, "certificate") {
		t.Fatalf("untrusted server: %d %s", code, errOut)
	}
	c.fails(exitError, "no PEM certificate", "--ca-file", c.file("empty.pem", []byte("nothing")), "enrollment", "list")
}
