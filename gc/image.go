package gc

import (
	"sort"

	"github.com/superfly/flyio-image-manager/metadata"
)

// BaseSnapshots returns the keys of our committed snapshots that hold
// chain id chainID in containerd namespace ns (backend keys
// "<ns>/<seq>/<chainID>").
func BaseSnapshots(tx *metadata.Tx, ns, chainID string) ([]string, error) {
	var out []string
	err := tx.Snapshots(func(key string, s *metadata.Snapshot, err error) error {
		if err != nil {
			return nil
		}
		if n, name, ok := splitBackendKey(key); ok && n == ns && name == chainID {
			out = append(out, key)
		}
		return nil
	})
	return out, err
}

// Dependents returns every snapshot whose parent chain reaches one of
// bases (the bases themselves excluded), sorted.
func Dependents(tx *metadata.Tx, bases []string) []string {
	var out []string
	queue := append([]string(nil), bases...)
	seen := map[string]bool{}
	for len(queue) > 0 {
		k := queue[0]
		queue = queue[1:]
		for _, kid := range tx.Children(k) {
			if !seen[kid] {
				seen[kid] = true
				out = append(out, kid)
				queue = append(queue, kid)
			}
		}
	}
	sort.Strings(out)
	return out
}
