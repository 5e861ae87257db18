package broker_test

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dpsbroker/dpsbroker/broker/brokertest"
	"github.com/dpsbroker/dpsbroker/provisioning/store/redistest"
	"github.com/dpsbroker/dpsbroker/provisioning/wire"
)

// journalSeries are the embedded store's journal metrics.
var journalSeries = []string{
	"dpsbroker_journal_appends_total", "dpsbroker_journal_entries_total", "dpsbroker_journal_append_failures_total",
	"dpsbroker_journal_sync_seconds_total", "dpsbroker_journal_pending_entries", "dpsbroker_journal_applies_total",
	"dpsbroker_journal_apply_failures_total", "dpsbroker_journal_apply_seconds_total",
	"dpsbroker_journal_direct_commits_total", "dpsbroker_journal_recovered_entries_total",
}

// TestJournalMetrics: on the embedded store one provisioned device shows
// in the journal series as one durable entry, applied to the database
// within the idle interval; a Redis-backed broker has no journal and no
// journal series.
func TestJournalMetrics(t *testing.T) {
	t.Run("embedded", func(t *testing.T) {
		b := brokertest.New(t)
		provisionOne(t, b)
		m := scrape(t, b)
		for _, name := range journalSeries {
			if _, ok := m[name]; !ok {
				t.Errorf("/metrics lacks %s", name)
			}
		}
		for name, want := range map[string]float64{
			"dpsbroker_journal_appends_total":           1,
			"dpsbroker_journal_entries_total":           1,
			"dpsbroker_journal_append_failures_total":   0,
			"dpsbroker_journal_apply_failures_total":    0,
			"dpsbroker_journal_direct_commits_total":    0,
			"dpsbroker_journal_recovered_entries_total": 0,
		} {
			if got := m[name]; got != want {
				t.Errorf("%s = %v, want %v", name, got, want)
			}
		}
		if m["dpsbroker_journal_sync_seconds_total"] <= 0 {
			t.Errorf("dpsbroker_journal_sync_seconds_total = %v after an append, want > 0", m["dpsbroker_journal_sync_seconds_total"])
		}
		// The registration is applied once the writer has been idle for a
		// second (nothing else writes here).
		deadline := time.Now().Add(10 * time.Second)
		for m["dpsbroker_journal_pending_entries"] != 0 || m["dpsbroker_journal_applies_total"] < 1 {
			if time.Now().After(deadline) {
				t.Fatalf("pending %v, applies %v: the registration was not applied",
					m["dpsbroker_journal_pending_entries"], m["dpsbroker_journal_applies_total"])
			}
			time.Sleep(50 * time.Millisecond)
			m = scrape(t, b)
		}
		if m["dpsbroker_journal_apply_seconds_total"] <= 0 {
			t.Errorf("dpsbroker_journal_apply_seconds_total = %v after an apply, want > 0", m["dpsbroker_journal_apply_seconds_total"])
		}
	})
	t.Run("redis", func(t *testing.T) {
		r := redistest.Start(t)
		b := brokertest.New(t, brokertest.WithRedis(r.Addr(), 0))
		provisionOne(t, b)
		m := scrape(t, b)
		if _, ok := m[`dpsbroker_store_call_seconds_count{op="commit_registration",result="ok"}`]; !ok {
			t.Error("/metrics lacks the commit_registration store calls: the scrape is not of this broker")
		}
		for name := range m {
			if strings.HasPrefix(name, "dpsbroker_journal_") {
				t.Errorf("a Redis-backed broker exports %s", name)
			}
		}
	})
}

// provisionOne enrolls a group and provisions one device of it.
func provisionOne(t *testing.T, b *brokertest.Broker) {
	t.Helper()
	factory := b.EnrollGroup(t, "factory")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	st, err := b.Provision(ctx, b.MintDevice(t, factory, "journaled-1"))
	if err != nil || st.Status != wire.StatusAssigned {
		t.Fatalf("provision: %+v, %v", st, err)
	}
}

// scrape reads /metrics over HTTP into sample -> value (the sample name
// with its labels, as in the exposition text).
func scrape(t *testing.T, b *brokertest.Broker) map[string]float64 {
	t.Helper()
	code, body := httpGet(t, b.HTTPURL()+"/metrics")
	if code != 200 {
		t.Fatalf("/metrics: %d", code)
	}
	out := map[string]float64{}
	for _, line := range strings.Split(body, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("/metrics line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out
}
