package bolt

import (
	"os"
	"syscall"
)

// fdatasync flushes f's data and what is needed to read it back, not its
// timestamps.
func fdatasync(f *os.File) error {
	for {
		err := syscall.Fdatasync(int(f.Fd()))
		if err != syscall.EINTR {
			return err
		}
	}
}
