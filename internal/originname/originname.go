// Package originname is the one rule for the names of lazily-backed
// origins: lazy makes and stores them (they become directory names), and
// the snapshotter takes them from an untrusted Prepare label, so both
// check with Validate before a name goes anywhere.
package originname

import (
	"fmt"
	"regexp"

	"github.com/containerd/errdefs"
)

// MaxLen bounds a name, which becomes a directory name and appears in
// device and table names.
const MaxLen = 64

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]*$`)

// Validate checks name: 1..MaxLen of [a-z0-9-], not starting with '-'.
// The error quotes at most 80 bytes of a bad name.
func Validate(name string) error {
	if len(name) == 0 || len(name) > MaxLen || !nameRE.MatchString(name) {
		shown := name
		if len(shown) > 80 {
			shown = shown[:80] + "..."
		}
		return fmt.Errorf("origin name %q: want 1..%d of [a-z0-9-], not starting with '-': %w", shown, MaxLen, errdefs.ErrInvalidArgument)
	}
	return nil
}
