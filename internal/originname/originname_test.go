package originname

import (
	"strings"
	"testing"

	"github.com/containerd/errdefs"
)

func TestValidate(t *testing.T) {
	for _, ok := range []string{"a", "bi-0123abcd", "9", strings.Repeat("a", MaxLen)} {
		if err := Validate(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "-a", "A", "a_b", "a/b", "..", "a.b", strings.Repeat("a", MaxLen+1), "a\x00"} {
		if err := Validate(bad); !errdefs.IsInvalidArgument(err) {
			t.Errorf("%q: %v, want invalid argument", bad, err)
		}
	}
	if err := Validate(strings.Repeat("X", 5000)); err == nil || len(err.Error()) > 300 {
		t.Errorf("a long bad name is quoted whole: %d bytes of error", len(err.Error()))
	}
}
