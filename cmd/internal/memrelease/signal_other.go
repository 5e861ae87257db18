//go:build !unix

package memrelease

import "os"

func notify() chan os.Signal { return nil }

func stop(chan os.Signal) {}
