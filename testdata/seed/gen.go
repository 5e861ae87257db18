//go:build ignore

// Command gen rebuilds the seed hierarchy of x509-attestation.txt as PEM
// files in this directory:
//
//	root -> A -> device-1, device-2, device-3
//	root -> B -> device-4, device-5
//
// Run from the repository root:
//
//	go run ./testdata/seed/gen.go
//
// Every file is rewritten with new keys and serials; never edit them by hand.
package main

import (
	"fmt"
	"log"
	"os"
	"path/filepath"
	"time"

	"github.com/dpsbroker/dpsbroker/provisioning/pkitest"
)

// validity is long so that the fixtures do not rot; backdated a day so a
// slow clock still accepts them.
const validity = 30 * 365 * 24 * time.Hour

func main() {
	dir := "testdata/seed"
	if len(os.Args) > 1 {
		dir = os.Args[1]
	}
	if err := run(dir); err != nil {
		log.Fatal(err)
	}
}

func run(dir string) error {
	now := time.Now().UTC().Truncate(time.Hour)
	span := pkitest.Validity(now.Add(-24*time.Hour), now.Add(validity))
	root, err := pkitest.NewRootCA("dpsbroker seed root", span)
	if err != nil {
		return err
	}
	files := map[string][]byte{
		"root.pem":     root.CertPEM(),
		"root.key.pem": root.KeyPEM(),
	}
	devices := map[string][]string{
		"A": {"device-1", "device-2", "device-3"},
		"B": {"device-4", "device-5"},
	}
	for _, name := range []string{"A", "B"} {
		inter, err := root.NewIntermediate("dpsbroker seed intermediate "+name, span)
		if err != nil {
			return err
		}
		files["intermediate-"+name+".pem"] = inter.CertPEM()
		files["intermediate-"+name+".key.pem"] = inter.KeyPEM()
		for _, id := range devices[name] {
			leaf, err := inter.NewLeaf(id, span)
			if err != nil {
				return err
			}
			// <id>.pem is the chain a device presents (leaf, then its
			// intermediate); <id>.cert.pem is the leaf alone, what an
			// individual enrollment stores.
			files[id+".pem"] = leaf.ChainPEM()
			files[id+".cert.pem"] = leaf.CertPEM()
			files[id+".key.pem"] = leaf.KeyPEM()
		}
	}
	for name, data := range files {
		if data == nil {
			return fmt.Errorf("%s: nothing to write", name)
		}
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			return err
		}
	}
	log.Printf("wrote %d files to %s", len(files), dir)
	return nil
}
