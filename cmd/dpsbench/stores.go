package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/dpsbroker/dpsbroker/provisioning/store/bolt"
	redisstore "github.com/dpsbroker/dpsbroker/provisioning/store/redis"
)

// seedBolt writes the fake fleet straight into an embedded store file
// that no broker holds open yet (bbolt allows one process per file).
func seedBolt(ctx context.Context, path, prefix string, n int, progress io.Writer) (time.Duration, error) {
	st, err := bolt.Open(path, bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return 0, fmt.Errorf("seed %s: %w", path, err)
	}
	d, err := seedFleet(ctx, st, prefix, n, progress)
	if cerr := st.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("seed %s: close: %w", path, cerr)
	}
	return d, err
}

// seedRedis writes the fake fleet through the Redis store, as a broker
// with the same ID scope and database will read it.
func seedRedis(ctx context.Context, addr string, db int, idScope, prefix string, n int, progress io.Writer) (time.Duration, error) {
	rdb := goredis.NewClient(&goredis.Options{Addr: addr, DB: db, PoolSize: 64})
	defer func() { _ = rdb.Close() }()
	st, err := redisstore.New(ctx, redisstore.Options{Client: rdb, IDScope: idScope, CacheSize: -1})
	if err != nil {
		return 0, fmt.Errorf("seed redis %s/%d: %w", addr, db, err)
	}
	defer func() { _ = st.Close() }()
	return seedFleet(ctx, st, prefix, n, progress)
}

// seedCmd is "dpsbench seed": the fake fleet into a store file (while no
// broker holds it) or a Redis database, for runs made by hand.
func seedCmd(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("dpsbench seed", flag.ContinueOnError)
	fs.SetOutput(stderr)
	boltPath := fs.String("bolt", "", "embedded store `file` (data-dir/dpsbroker.db) to write into; no broker may have it open")
	redisAddr := fs.String("redis", "", "Redis `host:port` to write into")
	db := fs.Int("db", 0, "Redis database")
	idScope := fs.String("id-scope", defaultIDScope, "ID `scope` the Redis keys are namespaced by (the broker's id-scope)")
	prefix := fs.String("prefix", "fleet-", "registration ID `prefix`; IDs are prefix + 7 digits")
	n := fs.Int("n", 1000, "enrollments to write")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if (*boltPath == "") == (*redisAddr == "") || *n < 1 {
		return errors.New("seed: give exactly one of -bolt and -redis, and -n >= 1")
	}
	var d time.Duration
	var err error
	if *boltPath != "" {
		d, err = seedBolt(ctx, *boltPath, *prefix, *n, stderr)
	} else {
		d, err = seedRedis(ctx, *redisAddr, *db, *idScope, *prefix, *n, stderr)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "dpsbench: seeded %d enrollments in %v (%.0f/s)\n", *n, d.Round(time.Millisecond), float64(*n)/d.Seconds())
	return nil
}
