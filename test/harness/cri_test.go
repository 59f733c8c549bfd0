package harness

import (
	"os"
	"sort"
	"strings"
	"testing"

	"github.com/pelletier/go-toml/v2"
)

// testOnlyKeys are what the test's containerd sets beyond a node's: its
// private paths and a faster stats collection.
var testOnlyKeys = map[string]bool{
	"root": true, "state": true, "grpc.address": true, "ttrpc.address": true,
	"plugins.io.containerd.cri.v1.images.stats_collect_period": true,
	"plugins.io.containerd.cri.v1.images.registry.config_path": true,
	"plugins.io.containerd.cri.v1.runtime.cdi_spec_dirs":       true,
}

// TestKubernetesDocMatchesCRIConfig keeps docs/kubernetes.md's node
// config and the one TestCRIPodLifecycle runs the same: every setting of
// the doc's first toml block is set by CRIConfig, with the same value
// where it is not a path, and every setting CRIConfig makes is in the doc
// unless it only serves the test.
func TestKubernetesDocMatchesCRIConfig(t *testing.T) {
	doc, err := os.ReadFile("../../docs/kubernetes.md")
	if err != nil {
		t.Fatal(err)
	}
	_, block, ok := strings.Cut(string(doc), "```toml\n")
	if !ok {
		t.Fatal("docs/kubernetes.md has no ```toml block")
	}
	block, _, _ = strings.Cut(block, "```")
	docKeys := flatTOML(t, "docs/kubernetes.md", block)
	cfg := CRIConfig{Dir: "/d", Address: "/d/c.sock", SnapshotterAddress: "/s.sock", SnapshotterRoot: "/root",
		SandboxImage: "r/pause:1", RegistryHostsDir: "/d/certs.d", CNIBinDir: "/cni", SnapshotAnnotations: true}
	testKeys := flatTOML(t, "CRIConfig", cfg.TOML())
	paths := map[string]bool{
		"proxy_plugins.flyio.address": true, "proxy_plugins.flyio.exports.root": true,
		"plugins.io.containerd.cri.v1.images.pinned_images.sandbox": true,
		"plugins.io.containerd.cri.v1.runtime.cni.conf_dir":         true,
		"plugins.io.containerd.cri.v1.runtime.cni.bin_dirs":         true,
	}
	for _, k := range sortedKeys(docKeys) {
		v, ok := testKeys[k]
		switch {
		case !ok:
			t.Errorf("docs/kubernetes.md sets %s, the tested config does not", k)
		case !paths[k] && v != docKeys[k]:
			t.Errorf("%s: docs/kubernetes.md says %s, the tested config %s", k, docKeys[k], v)
		}
	}
	for _, k := range sortedKeys(testKeys) {
		if _, ok := docKeys[k]; !ok && !testOnlyKeys[k] {
			t.Errorf("the tested config sets %s = %s, docs/kubernetes.md does not", k, testKeys[k])
		}
	}
	if len(docKeys) < 10 {
		t.Errorf("only %d settings parsed from docs/kubernetes.md: is the parser broken?", len(docKeys))
	}
}

// flatTOML parses src and returns every leaf as dotted.key -> value.
func flatTOML(t *testing.T, what, src string) map[string]string {
	t.Helper()
	var m map[string]any
	if err := toml.Unmarshal([]byte(src), &m); err != nil {
		t.Fatalf("%s: %v\n%s", what, err, src)
	}
	out := map[string]string{}
	var walk func(prefix string, v any)
	walk = func(prefix string, v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, c := range v {
				walk(strings.TrimPrefix(prefix+"."+k, "."), c)
			}
		case []any:
			if len(v) > 0 {
				if _, ok := v[0].(map[string]any); ok {
					for _, c := range v {
						walk(prefix, c)
					}
					return
				}
			}
			b, _ := toml.Marshal(map[string]any{"v": v})
			out[prefix] = strings.TrimSpace(strings.TrimPrefix(string(b), "v = "))
		default:
			b, _ := toml.Marshal(map[string]any{"v": v})
			out[prefix] = strings.TrimSpace(strings.TrimPrefix(string(b), "v = "))
		}
	}
	walk("", m)
	return out
}

func sortedKeys(m map[string]string) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}
