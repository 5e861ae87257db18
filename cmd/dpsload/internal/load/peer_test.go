package load

import (
	"context"
	"os"
	"os/exec"
	"testing"
)

// TestPeerProbeOutlivesPeer: a peer that exits between readings counts
// with its last reading, while a peer never read is an error.
func TestPeerProbeOutlivesPeer(t *testing.T) {
	// A peer that burns a little CPU, then waits to be killed.
	cmd := exec.Command(os.Args[0], "-test.run=^TestPeerProbeHelper$")
	cmd.Env = append(os.Environ(), "DPSLOAD_PEER_HELPER=1")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 5)
	if _, err := stdout.Read(buf); err != nil { // "ready" once it has spun
		t.Fatal(err)
	}
	p := NewPeerProbe([]int{os.Getpid(), cmd.Process.Pid})
	before, err := p.Sample(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	after, err := p.Sample(context.Background())
	if err != nil {
		t.Fatalf("after the peer exited: %v", err)
	}
	if after.CPU < before.CPU {
		t.Errorf("CPU went backwards: %v then %v", before.CPU, after.CPU)
	}
	if _, err := NewPeerProbe([]int{cmd.Process.Pid}).Sample(context.Background()); err == nil {
		t.Error("a peer never read and gone: no error")
	}
}

// TestPeerProbeHelper is not a test: TestPeerProbeOutlivesPeer's peer.
func TestPeerProbeHelper(t *testing.T) {
	if os.Getenv("DPSLOAD_PEER_HELPER") == "" {
		return
	}
	x := 0
	for i := range 20_000_000 {
		x += i % 7
	}
	os.Stdout.WriteString("ready")
	_ = x
	select {}
}
