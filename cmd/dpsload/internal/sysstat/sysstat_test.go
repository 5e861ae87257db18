package sysstat

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"
)

func TestParseProcStat(t *testing.T) {
	// The command name holds spaces and a parenthesis, as a renamed
	// process may.
	line := "1234 (my (odd) proc) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 8 0 100 999999 300 18446744073709551615\n"
	s, err := parseProcStat([]byte(line))
	if err != nil {
		t.Fatal(err)
	}
	if s.CPU != 3*time.Second {
		t.Errorf("CPU = %v, want 3s", s.CPU)
	}
	if want := uint64(300 * os.Getpagesize()); s.RSS != want {
		t.Errorf("RSS = %d, want %d", s.RSS, want)
	}
	for _, bad := range []string{"", "1 (x) S 1 2", "1 (x) S 1 2 3 4 5 6 7 8 9 10 a b 0 0 20 0 8 0 100 9 3 1"} {
		if _, err := parseProcStat([]byte(bad)); err == nil {
			t.Errorf("parseProcStat(%q) succeeded", bad)
		}
	}
}

func TestReadProcSelf(t *testing.T) {
	s, err := ReadProc(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if s.RSS == 0 {
		t.Error("RSS of this process is 0")
	}
	if _, err := SelfCPU(); err != nil {
		t.Error(err)
	}
	m, err := ReadMachine()
	if err != nil || m.Total <= 0 || m.Busy > m.Total {
		t.Errorf("machine %+v %v", m, err)
	}
}

func TestParseMachine(t *testing.T) {
	s, err := parseMachine("cpu  100 0 100 700 100 0 0 0 0 0\n")
	if err != nil {
		t.Fatal(err)
	}
	if s.Busy != 2*time.Second || s.Total != 10*time.Second {
		t.Errorf("%+v", s)
	}
	if _, err := parseMachine("cpu0 1 2 3 4"); err == nil {
		t.Error("per-core line accepted")
	}
}

func TestScrapeProcess(t *testing.T) {
	tests := []struct {
		name    string
		body    string
		wantErr bool
		want    ProcSample
	}{
		{
			name: "process collector",
			body: "# HELP process_cpu_seconds_total x\n# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total 12.5\n" +
				"process_resident_memory_bytes 3.2e+07\ngo_goroutines 12\n",
			want: ProcSample{CPU: 12500 * time.Millisecond, RSS: 32000000},
		},
		{name: "missing rss", body: "process_cpu_seconds_total 1\n", wantErr: true},
		{name: "garbage value", body: "process_cpu_seconds_total x\nprocess_resident_memory_bytes 1\n", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				_, _ = w.Write([]byte(tt.body))
			}))
			defer srv.Close()
			got, err := ScrapeProcess(context.Background(), srv.Client(), srv.URL)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v", err)
			}
			if !tt.wantErr && got != tt.want {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestDescribe(t *testing.T) {
	m := Describe()
	if m.NumCPU < 1 || !strings.HasPrefix(m.GoVersion, "go") {
		t.Errorf("%+v", m)
	}
}
