package analytics_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/broker/natsjs"
	"github.com/heraldhq/herald/catalog"
	"github.com/heraldhq/herald/catalog/schematest"
	"github.com/heraldhq/herald/examples/shop/analytics"
	"github.com/heraldhq/herald/examples/shop/contract"
	"github.com/heraldhq/herald/internal/npmci"
)

// envUpdate, set to 1, makes TestManifest rewrite manifest.json's contracts
// from the Go contracts.
const envUpdate = "HERALD_UPDATE_MANIFEST"

// thresholdReached is the fact the Node.js service publishes from, as the
// manifest declares it (a service not written with herald has no domain
// events of herald's; the manifest format asks for one per translation).
var thresholdReached = herald.Domain[contract.ProductTrending]("analytics.threshold-reached")

// TestPartitionOfMatchesGo runs wire.mjs's FNV-1a and partitionOf in node
// on keys of every kind (empty, ASCII, multi-byte UTF-8, long) and compares
// them with hash/fnv and natsjs.PartitionOf: a Node.js publisher picks the
// partition herald's consumers read.
func TestPartitionOfMatchesGo(t *testing.T) {
	npmci.Require(t, "analytics: wire.mjs runs in node")
	keys := []string{"", "a", "p-book", "p-clock", "order-01HZX3Y", "ünïcødé", "日本語のキー", "🎉", strings.Repeat("k", 1000), "x.y.z", "01JFD9W4Z8H2K7Q4N6B3C5V1XR"}
	for i := range 50 {
		keys = append(keys, fmt.Sprintf("order-%d", i*7919))
	}
	ns := []int{1, 2, 3, 4, 7, 16, 64, 1000}
	in, _ := json.Marshal(map[string]any{"keys": keys, "ns": ns})
	script := `import { fnv1a32, partitionOf } from "./wire.mjs";
const { keys, ns } = JSON.parse(process.argv[1]);
console.log(JSON.stringify(keys.map((k) => ({ hash: fnv1a32(k), parts: ns.map((n) => partitionOf(k, n)) }))));`
	cmd := exec.Command("node", "--input-type=module", "-e", script, string(in))
	cmd.Dir = analytics.SourceDir()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node: %v\n%s", err, out)
	}
	var got []struct {
		Hash  uint32
		Parts []int
	}
	if err := json.Unmarshal(out, &got); err != nil || len(got) != len(keys) {
		t.Fatalf("node printed %q: %v", out, err)
	}
	for i, k := range keys {
		h := fnv.New32a()
		h.Write([]byte(k))
		if got[i].Hash != h.Sum32() {
			t.Errorf("fnv1a32(%.20q) = %d in JS, %d in Go", k, got[i].Hash, h.Sum32())
		}
		for j, n := range ns {
			if want := natsjs.PartitionOf(k, n); got[i].Parts[j] != want {
				t.Errorf("partitionOf(%.20q, %d) = %d in JS, natsjs.PartitionOf = %d", k, n, got[i].Parts[j], want)
			}
		}
	}
}

// TestManifest checks the manifest the Node.js service publishes
// (manifest.json, with version and updated filled in at start) against the
// documented format (catalog.ManifestSchema) and catalog's checks, and its
// contracts against the Go contracts of examples/shop/contract: the schemas
// must be the ones herald generates, or `herald catalog` would warn that
// producer and consumer disagree. HERALD_UPDATE_MANIFEST=1 rewrites them.
func TestManifest(t *testing.T) {
	path := filepath.Join(analytics.SourceDir(), "manifest.json")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	schematest.ValidateManifest(t, data)
	var m catalog.Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	want, err := herald.DescribeContracts(thresholdReached, contract.OrderConfirmedV1, contract.ProductTrendingV1)
	if err != nil {
		t.Fatal(err)
	}
	for i := range want {
		want[i].GoType = "" // a JavaScript service has no Go types
	}
	if os.Getenv(envUpdate) == "1" {
		var raw map[string]json.RawMessage
		if err := json.Unmarshal(data, &raw); err != nil {
			t.Fatal(err)
		}
		raw["contracts"], _ = json.Marshal(want)
		out, _ := json.MarshalIndent(raw, "", "  ")
		var buf bytes.Buffer
		buf.Write(out)
		buf.WriteByte('\n')
		if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote the contracts of %s", path)
		return
	}
	got, _ := json.Marshal(m.Contracts)
	exp, _ := json.Marshal(want)
	if !bytes.Equal(got, exp) {
		t.Errorf("manifest.json's contracts differ from the Go contracts (run with %s=1 to rewrite them):\n got %s\nwant %s", envUpdate, got, exp)
	}
	if m.Service != analytics.Service {
		t.Errorf("manifest.json names service %q, want %q", m.Service, analytics.Service)
	}
}

// TestPrepareWritesARunnableCopy prepares the service in a new directory
// from the embedded files, as an installed herald binary does, and checks
// that node loads its dependencies there.
func TestPrepareWritesARunnableCopy(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: npm ci into a new directory")
	}
	npmci.Require(t, "analytics: the service runs in node")
	dir := t.TempDir()
	if err := analytics.Prepare(context.Background(), dir); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"analytics.mjs", "wire.mjs", "state.mjs", "manifest.json", "node_modules/cloudevents/package.json"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("after Prepare: %v", err)
		}
	}
	cmd := exec.Command("node", "--input-type=module", "-e", `await import("cloudevents"); await import("@nats-io/jetstream"); await import("@nats-io/transport-node"); console.log("ok")`)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil || strings.TrimSpace(string(out)) != "ok" {
		t.Errorf("node in the prepared directory: %v\n%s", err, out)
	}
}

// TestHolds: Holds is true for the checkout's own sources (the binary was
// built from them) and false once one of them differs, so that the demo
// never writes over an edited checkout.
func TestHolds(t *testing.T) {
	src := analytics.SourceDir()
	if src == "" {
		t.Skip("no checkout")
	}
	if !analytics.Holds(src) {
		t.Fatalf("Holds(%s) = false for the sources this test binary embeds", src)
	}
	dir := t.TempDir()
	if analytics.Holds(dir) {
		t.Fatal("Holds of an empty directory = true")
	}
	if err := os.CopyFS(dir, analytics.Files); err != nil {
		t.Fatal(err)
	}
	if !analytics.Holds(dir) {
		t.Fatal("Holds of a copy of the embedded files = false")
	}
	if err := os.WriteFile(filepath.Join(dir, "analytics.mjs"), []byte("// edited\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if analytics.Holds(dir) {
		t.Fatal("Holds after analytics.mjs was edited = true: the demo would write over the edit")
	}
}
