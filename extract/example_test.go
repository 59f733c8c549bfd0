package extract_test

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/superfly/flyio-image-manager/extract"
)

func ExampleExtract() {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: "rootfs/", Mode: 0o755})
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "rootfs/hello", Mode: 0o644, Size: 3})
	tw.Write([]byte("hi\n"))
	tw.Close()

	dest, _ := os.MkdirTemp("", "example")
	defer os.RemoveAll(dest)
	res, err := extract.Extract(context.Background(), &buf, dest, extract.Options{})
	if err != nil {
		fmt.Println(err)
		return
	}
	b, _ := os.ReadFile(dest + "/hello")
	fmt.Printf("%d entries, stripped %q, compression %s: %s", res.Entries, res.StrippedPrefix, res.Compression, b)
	// Output: 2 entries, stripped "rootfs/", compression none: hi
}

func ExampleValidate() {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "../../etc/cron.d/evil", Mode: 0o644})
	tw.Close()

	_, err := extract.Validate(context.Background(), &buf, extract.Options{})
	var ee *extract.EntryError
	fmt.Println(err, errors.Is(err, extract.ErrPathTraversal), errors.As(err, &ee) && ee.Entry == "../../etc/cron.d/evil")
	// Output: path traversal detected: ../../etc/cron.d/evil true true
}
