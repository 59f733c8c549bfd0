package extract

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"
)

var errNetwork = errors.New("connection reset by peer")

// failAfter returns n bytes of r, then errNetwork.
type failAfter struct {
	r io.Reader
	n int
}

func (f *failAfter) Read(p []byte) (int, error) {
	if f.n <= 0 {
		return 0, errNetwork
	}
	if len(p) > f.n {
		p = p[:f.n]
	}
	k, err := f.r.Read(p)
	f.n -= k
	if err == io.EOF {
		return k, errNetwork
	}
	return k, err
}

// The decoder runs ahead on its own goroutine; a failing source must
// still be reported as the source's failure, never as a corrupt or
// truncated archive, wherever it fails: in the middle, or after the last
// compressed byte (met only while draining).
func TestSourceErrorThroughReadahead(t *testing.T) {
	big := strings.Repeat("incompressible? no, but long enough. ", 200000)
	data := gz(t, mkTar(t, dir("etc"), file("etc/a", big), file("etc/b", big)))
	for _, cut := range []int{len(data) / 3, len(data) - 100, len(data)} {
		for _, validate := range []bool{false, true} {
			src := &failAfter{r: bytes.NewReader(data), n: cut}
			var err error
			if validate {
				_, err = Validate(context.Background(), src, Options{})
			} else {
				_, err = Extract(context.Background(), src, newSandbox(t).root, Options{})
			}
			if !errors.Is(err, errNetwork) || errors.Is(err, ErrCorrupt) || errors.Is(err, ErrTruncated) {
				t.Errorf("cut at %d of %d (validate %v): err = %v, want the source's error", cut, len(data), validate, err)
			}
		}
	}
}
