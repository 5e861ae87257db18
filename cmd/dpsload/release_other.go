//go:build !unix

package main

import "errors"

func signalRelease(int) error { return errors.New("needs SIGUSR1, which this system lacks") }
