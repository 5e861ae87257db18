package provisioning_test

import (
	"bufio"
	"bytes"
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/dpsbroker/dpsbroker"

// Forbidden third-party imports by layer (DESIGN: dependency direction).
var (
	mqttAndRedis = []string{
		"github.com/mochi-mqtt/",
		"github.com/eclipse/paho",
		"github.com/redis/go-redis",
	}
	mochiAndRedis = []string{
		"github.com/mochi-mqtt/",
		"github.com/redis/go-redis",
		"go.etcd.io/bbolt",
	}
)

// rule says which dependencies the packages under prefix must never have.
type rule struct {
	prefix    string   // package path prefix under the module
	except    []string // packages under prefix the rule leaves out
	forbidden []string // dependency path prefixes
}

var rules = []rule{
	{ // The domain imports neither MQTT nor Redis, and nothing of ours above it.
		prefix: module + "/provisioning",
		except: []string{module + "/provisioning/store/redis"},
		forbidden: append([]string{
			module + "/hooks", module + "/broker", module + "/clients", module + "/cmd",
		}, mqttAndRedis...),
	},
	{ // The Redis store may use go-redis, but never MQTT or the layers above.
		prefix:    module + "/provisioning/store/redis",
		forbidden: []string{"github.com/mochi-mqtt/", "github.com/eclipse/paho", module + "/hooks", module + "/broker", module + "/clients"},
	},
	{ // Hooks adapt mochi to the domain; they never reach for the assembly or a concrete store.
		prefix: module + "/hooks",
		forbidden: []string{
			module + "/broker", module + "/clients", module + "/cmd",
			module + "/provisioning/store/redis", module + "/provisioning/store/bolt",
			"github.com/redis/go-redis", "go.etcd.io/bbolt",
		},
	},
	{ // Device clients speak the wire format over paho, and know nothing of the server side.
		prefix: module + "/clients",
		forbidden: append([]string{
			module + "/hooks", module + "/broker", module + "/provisioning/store",
			module + "/provisioning/x509attest",
		}, mochiAndRedis...),
	},
}

// TestDependencyDirection walks `go list -deps` for every package of the
// module and fails when a layer depends on one it must not know.
func TestDependencyDirection(t *testing.T) {
	cmd := exec.Command("go", "list", "-f", `{{.ImportPath}}{{range .Deps}} {{.}}{{end}}`, module+"/...")
	cmd.Dir = ".."
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.String())
	}
	checked := 0
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 {
			continue
		}
		pkg, deps := fields[0], fields[1:]
		for _, r := range rules {
			if !under(pkg, r.prefix) || contains(r.except, pkg) {
				continue
			}
			checked++
			for _, d := range deps {
				for _, f := range r.forbidden {
					if strings.HasPrefix(d, f) {
						t.Errorf("%s depends on %s (forbidden for %s/...)", pkg, d, r.prefix)
					}
				}
			}
		}
	}
	if checked == 0 {
		t.Fatal("no package was checked: the module path or go list output changed")
	}
}

func under(pkg, prefix string) bool {
	return pkg == prefix || strings.HasPrefix(pkg, prefix+"/")
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
