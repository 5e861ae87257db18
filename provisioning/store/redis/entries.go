package redisstore

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dpsbroker/dpsbroker/provisioning"
)

// meta is what the store assigns to an entry; it is kept beside the JSON
// value (hash fields e, c, u) so that the write script can keep the
// creation time without parsing JSON.
type meta struct {
	etag             string
	created, updated time.Time
}

// kind describes one etag-checked entry type.
type kind struct {
	what   string                  // for error messages
	prefix string                  // key segment: "enr", "grp", "ca", "reg"
	change provisioning.ChangeKind // "" when writes publish nothing
	// bumpGen: writes change what GroupsByCertificate or the group list
	// answer.
	bumpGen bool
}

var (
	kindEnrollment   = kind{what: "enrollment", prefix: "enr", change: provisioning.ChangeEnrollment}
	kindGroup        = kind{what: "enrollment group", prefix: "grp", change: provisioning.ChangeGroup, bumpGen: true}
	kindCA           = kind{what: "CA certificate", prefix: "ca", change: provisioning.ChangeCA, bumpGen: true}
	kindRegistration = kind{what: "registration", prefix: "reg"}
)

func (s *Store) entryKey(k kind, id string) string { return s.k.p + k.prefix + ":" + id }

const timeLayout = time.RFC3339Nano

func formatTime(t time.Time) string { return t.UTC().Format(timeLayout) }

func parseTime(v any) (time.Time, error) {
	str, _ := v.(string)
	t, err := time.Parse(timeLayout, str)
	if err != nil {
		return time.Time{}, fmt.Errorf("stored time %q: %w", str, err)
	}
	return t.UTC(), nil
}

// decodeFields turns the v, e, c, u values of one entry into the entry.
func decodeFields[T any](vals []any) (*T, meta, error) {
	raw, _ := vals[0].(string)
	var out T
	if err := json.Unmarshal([]byte(raw), &out); err != nil {
		return nil, meta{}, fmt.Errorf("stored value: %w", err)
	}
	m := meta{}
	m.etag, _ = vals[1].(string)
	var err error
	if m.created, err = parseTime(vals[2]); err != nil {
		return nil, meta{}, err
	}
	if m.updated, err = parseTime(vals[3]); err != nil {
		return nil, meta{}, err
	}
	return &out, m, nil
}

// get reads one entry: a single HMGET. found is false for a missing entry.
func get[T any](ctx context.Context, s *Store, k kind, key string) (*T, meta, bool, error) {
	vals, err := s.rdb.HMGet(ctx, s.entryKey(k, key), "v", "e", "c", "u").Result()
	if err != nil {
		return nil, meta{}, false, s.wrap("get "+k.what, err)
	}
	if len(vals) != 4 || vals[0] == nil {
		return nil, meta{}, false, nil
	}
	v, m, err := decodeFields[T](vals)
	if err != nil {
		return nil, meta{}, false, fmt.Errorf("redis store: %s %q: %w", k.what, key, err)
	}
	return v, m, true, nil
}

// write runs the write script. value is the JSON without store-assigned
// fields; index lists the index entries ("s:<suffix>" / "z:<suffix>").
// It returns the meta of the stored entry.
func (s *Store) write(ctx context.Context, k kind, key string, del bool, value []byte, ifMatch string, index []string) (meta, error) {
	op := "put"
	if del {
		op = "del"
	}
	if index == nil {
		index = []string{}
	}
	idx, err := json.Marshal(index)
	if err != nil {
		return meta{}, err
	}
	now := s.now().UTC()
	m := meta{etag: newETag(), updated: now}
	gen := "0"
	if k.bumpGen {
		gen = "1"
	}
	res, err := writeScript.Run(ctx, s.rdb,
		[]string{s.entryKey(k, key), s.k.ids(k.prefix)},
		op, ifMatch, key, m.etag, formatTime(now), value, s.k.p, s.k.changes(), string(k.change), gen, idx,
	).Slice()
	if err != nil {
		return meta{}, s.wrap(op+" "+k.what, err)
	}
	status, _ := res[0].(int64)
	switch status {
	case 1:
		// Invalidate now rather than on the pub/sub echo, so that this
		// process reads its own write at once; the echo, recognised by the
		// etag, then leaves the cache alone (a group list rebuilt after the
		// write stays the current snapshot). On an error above the outcome
		// is unknown, nothing is recorded, and the echo invalidates.
		if k.change != "" {
			s.cache.invalidateOwn(provisioning.Change{Kind: k.change, ID: key}, m.etag)
		}
	case 0:
		return meta{}, preconditionFailed(k.what, key)
	case -1:
		return meta{}, notFound(k.what, key)
	default:
		return meta{}, fmt.Errorf("redis store: %s %s: unexpected script answer %v", op, k.what, res)
	}
	if !del {
		if m.created, err = parseTime(res[1]); err != nil {
			return meta{}, fmt.Errorf("redis store: %s %q: %w", k.what, key, err)
		}
	}
	return m, nil
}

// list runs the list script on an ordered-ID set: start is "-" or
// "(<cursor>", count -1 for all.
func list[T any](ctx context.Context, s *Store, k kind, set, start string, count int) ([]*T, []meta, []string, error) {
	res, err := listScript.Run(ctx, s.rdb, []string{set}, s.k.p+k.prefix+":", start, count).Slice()
	if err != nil {
		return nil, nil, nil, s.wrap("list "+k.what, err)
	}
	return decodeFlat[T](k, res)
}

// decodeFlat decodes the id, v, e, c, u tuples the read scripts return.
func decodeFlat[T any](k kind, res []any) ([]*T, []meta, []string, error) {
	n := len(res) / 5
	vals := make([]*T, 0, n)
	metas := make([]meta, 0, n)
	ids := make([]string, 0, n)
	for i := 0; i+5 <= len(res); i += 5 {
		id, _ := res[i].(string)
		v, m, err := decodeFields[T](res[i+1 : i+5])
		if err != nil {
			return nil, nil, nil, fmt.Errorf("redis store: %s %q: %w", k.what, id, err)
		}
		vals = append(vals, v)
		metas = append(metas, m)
		ids = append(ids, id)
	}
	return vals, metas, ids, nil
}

// page lists one page after cursor: it asks for one entry more than limit
// so that next is "" exactly on the last page.
func page[T any](ctx context.Context, s *Store, k kind, set, cursor string, limit int) ([]*T, []meta, string, error) {
	if err := ctx.Err(); err != nil {
		return nil, nil, "", fmt.Errorf("redis store: list %s: %w", k.what, err)
	}
	if limit <= 0 {
		return nil, nil, "", fmt.Errorf("redis store: list %s: limit %d must be positive", k.what, limit)
	}
	limit = min(limit, MaxPage)
	start := "-"
	if cursor != "" {
		start = "(" + cursor
	}
	vals, metas, ids, err := list[T](ctx, s, k, set, start, limit+1)
	if err != nil {
		return nil, nil, "", err
	}
	next := ""
	if len(vals) > limit {
		vals, metas, next = vals[:limit], metas[:limit], ids[limit-1]
	}
	return vals, metas, next, nil
}

func checkID(what, id string) (string, error) {
	if id == "" {
		return "", fmt.Errorf("redis store: %s: empty ID", what)
	}
	return provisioning.RegistrationKey(id), nil
}

func ctxErr(ctx context.Context, op string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("redis store: %s: %w", op, err)
	}
	return nil
}

// certThumbprint decodes a certificate field by the domain's one rule
// (provisioning.ParseCertificate) and returns the hex SHA-256 of the DER. A
// field that is not a parseable certificate is an error (wrapping
// provisioning.ErrBadCertificate): an entry the store cannot index would
// silently never match.
func certThumbprint(field, s string) (string, error) {
	cert, err := provisioning.ParseCertificate(s)
	if err != nil {
		return "", fmt.Errorf("%s: %w", field, err)
	}
	tp := provisioning.Thumbprint(cert)
	return hex.EncodeToString(tp[:]), nil
}

// groupIndex lists the index entries of a group: its signing certificates
// and the CA names it references.
func groupIndex(g *provisioning.EnrollmentGroup) ([]string, error) {
	var idx []string
	x := g.Attestation.X509
	if x == nil {
		return idx, nil
	}
	if sc := x.SigningCertificates; sc != nil {
		for _, c := range []struct {
			field string
			cert  *provisioning.X509CertificateWithInfo
		}{
			{"attestation.x509.signingCertificates.primary", sc.Primary},
			{"attestation.x509.signingCertificates.secondary", sc.Secondary},
		} {
			if c.cert == nil {
				continue
			}
			tp, err := certThumbprint(c.field, c.cert.Certificate)
			if err != nil {
				return nil, err
			}
			idx = append(idx, "s:ix:cert:"+tp)
		}
	}
	if ref := x.CAReferences; ref != nil {
		for _, name := range []string{ref.Primary, ref.Secondary} {
			if name != "" {
				idx = append(idx, "s:ix:grpca:"+provisioning.RegistrationKey(name))
			}
		}
	}
	return idx, nil
}

// isNil reports a missing (redis.Nil) answer.
func isNil(err error) bool { return errors.Is(err, redis.Nil) }
