//go:build unix

package main

import "syscall"

// signalRelease asks a server to collect and return free memory
// (cmd/internal/memrelease).
func signalRelease(pid int) error { return syscall.Kill(pid, syscall.SIGUSR1) }
