//go:build unix

package memrelease

import (
	"os"
	"os/signal"
	"syscall"
)

func notify() chan os.Signal {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGUSR1)
	return ch
}

func stop(ch chan os.Signal) { signal.Stop(ch) }
