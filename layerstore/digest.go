package layerstore

import (
	"fmt"
	"regexp"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
)

// ErrInvalidDigest is matched (errors.Is) when a label or pointer names a
// digest that is not sha256:<64 lowercase hex>. It wraps
// errdefs.ErrInvalidArgument.
var ErrInvalidDigest = fmt.Errorf("invalid layer digest: %w", errdefs.ErrInvalidArgument)

var sha256Re = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)

// checkDigest refuses anything but a canonical sha256 digest. Keys are
// built from labels other programs set, so nothing else may reach
// one: no other algorithms, no upper case, no path characters.
func checkDigest(what, d string) (digest.Digest, error) {
	if !sha256Re.MatchString(d) {
		return "", fmt.Errorf("%s %q: want sha256:<64 lowercase hex>: %w", what, d, ErrInvalidDigest)
	}
	return digest.Digest(d), nil
}
