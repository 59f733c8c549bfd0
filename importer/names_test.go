package importer

import "testing"

func TestDeriveImageID(t *testing.T) {
	for key, want := range map[string]string{
		"images/alpine.tar":             "alpine",
		"images/Alpine_3.19.tar.gz":     "alpine-3.19",
		"images/team/node 20.tar.zst":   "node-20",
		"images/busybox.tgz":            "busybox",
		"images/.tar":                   "image",
		"images/weird@@name!!.tar.gzip": "weird-name-.tar.gzip",
	} {
		if got := DeriveImageID(key); got != want {
			t.Errorf("DeriveImageID(%q) = %q, want %q", key, got, want)
		}
	}
	if got := DeriveRef("alpine"); got != "images.flyio.local/alpine:latest" {
		t.Errorf("DeriveRef = %q", got)
	}
}
