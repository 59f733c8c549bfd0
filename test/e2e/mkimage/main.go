// Command mkimage writes the end-to-end tests' OCI image archive (see
// package ociarchive) for the demo: go run ./test/e2e/mkimage -o img.tar.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"os"

	"github.com/superfly/flyio-image-manager/test/ociarchive"
)

func main() {
	out := flag.String("o", "image.tar", "output `FILE`")
	ref := flag.String("ref", "docker.io/flyio/demo:1", "image name (ref-name annotation)")
	busybox := flag.String("busybox", ociarchive.BusyboxPath, "static busybox `BINARY` for the base layer")
	flag.Parse()
	if err := write(*out, *ref, *busybox); err != nil {
		fmt.Fprintf(os.Stderr, "mkimage: %v\n", err)
		os.Exit(1)
	}
}

func write(out, ref, busybox string) error {
	img, err := ociarchive.TestImage(ref, busybox)
	if err != nil {
		return err
	}
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	if err := ociarchive.Write(w, img); err != nil {
		f.Close()
		return fmt.Errorf("%s: %w", out, err)
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
