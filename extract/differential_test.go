package extract

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/containerd/containerd/v2/pkg/archive/tartest"
)

// The differential test: Validate and Extract share one set of rules, so
// on an empty root (a fresh device, or in Layer mode an empty parent, which
// Validate is told about) they must reach the same verdict on every
// archive of the hostile corpus, of containerd's breakout corpus and of
// the fuzz corpus: both succeed, or both fail with the same kind of error.

// verdictKinds are the kinds a verdict is told apart by; any other error
// is "other" (an operation the kernel refused), which Validate cannot
// produce, so it is always a disagreement.
var verdictKinds = []error{ErrPathTraversal, ErrInvalidName, ErrHardlinkEscape, ErrInvalidHardlink,
	ErrSymlinkEscape, ErrInvalidWhiteout, ErrInvalidParent, ErrOutOfRange, ErrInvalidXattr, ErrFileTooLarge, ErrTooManyEntries,
	ErrArchiveTooLarge, ErrTruncated, ErrCorrupt, ErrUnsupportedCompression, ErrDigestMismatch}

func verdict(err error) string {
	if err == nil {
		return "ok"
	}
	for _, k := range verdictKinds {
		if errors.Is(err, k) {
			return k.Error()
		}
	}
	return "other"
}

type diffCase struct {
	name string
	data []byte
	opts Options
}

func differentialCorpus(t *testing.T) []diffCase {
	var cases []diffCase
	for _, c := range hostileCases() {
		if c.pre != nil {
			continue // a parent layer Validate cannot see
		}
		s := &sandbox{dir: "/tmp/x", root: "/tmp/x/root", sentinel: "/tmp/x/sentinel"}
		ls := c.layers(t, s)
		if len(ls) != 1 {
			continue
		}
		cases = append(cases, diffCase{"hostile/" + c.name, ls[0], c.opts})
	}
	for _, bo := range containerdBreakouts(t) {
		if bo.apply != nil {
			continue
		}
		rc := tartest.TarFromWriterTo(bo.w)
		data, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		cases = append(cases, diffCase{"containerd/" + bo.name, data, Options{Mode: Layer}})
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzExtract")
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		data, flags, err := readFuzzFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatalf("%s: %v", e.Name(), err)
		}
		cases = append(cases, diffCase{"fuzz/" + e.Name(), data, fuzzOptions(flags)})
	}
	for i, s := range fuzzSeeds(t) {
		for _, flags := range []uint8{0, 1, 4, 8, 9} {
			cases = append(cases, diffCase{"seed/" + strconv.Itoa(i) + "/" + strconv.Itoa(int(flags)), s, fuzzOptions(flags)})
		}
	}
	return cases
}

// readFuzzFile parses a `go test fuzz v1` file of FuzzExtract: a []byte
// and a byte.
func readFuzzFile(p string) ([]byte, uint8, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, 0, err
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != 3 || lines[0] != "go test fuzz v1" {
		return nil, 0, errors.New("not a two-value fuzz file")
	}
	data, err := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(lines[1], "[]byte("), ")"))
	if err != nil {
		return nil, 0, err
	}
	r, _, _, err := strconv.UnquoteChar(strings.TrimSuffix(strings.TrimPrefix(lines[2], "byte('"), "')"), '\'')
	if err != nil {
		return nil, 0, err
	}
	return []byte(data), uint8(r), nil
}

// differ extracts data into a fresh empty root and validates it, and
// reports a disagreement.
func differ(t *testing.T, data []byte, opts Options) {
	t.Helper()
	root := filepath.Join(t.TempDir(), "root")
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error { os.Chmod(p, 0o755); return nil })
	})
	_, xerr := Extract(context.Background(), bytes.NewReader(data), root, opts)
	vopts := opts
	vopts.emptyParent = true
	_, verr := Validate(context.Background(), bytes.NewReader(data), vopts)
	if verdict(xerr) != verdict(verr) {
		t.Errorf("verdicts differ:\n  extract:  %v\n  validate: %v", xerr, verr)
	}
}

func TestValidateAgreesWithExtract(t *testing.T) {
	for _, c := range differentialCorpus(t) {
		// One resolver: TestHostileArchives and TestContainerdBreakouts
		// hold the userspace walk to openat2's verdicts, and the fuzz
		// files choose theirs.
		t.Run(c.name, func(t *testing.T) { differ(t, c.data, c.opts) })
	}
}
