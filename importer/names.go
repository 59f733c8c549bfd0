package importer

import (
	"path"
	"regexp"
	"strings"
)

// RefDomain is the registry-style domain of the references process-image
// gives images by default. It is not a registry anyone pulls from: it makes
// the name fully qualified, so ctr and nerdctl take it as is.
const RefDomain = "images.flyio.local"

var (
	archiveSuffixes = []string{".tar.gz", ".tar.zst", ".tar.zstd", ".tgz", ".tzst", ".tar"}
	invalidIDChars  = regexp.MustCompile(`[^a-z0-9._-]+`)
)

// DeriveImageID turns an S3 key into an image id, deterministically: the
// last path element without its archive suffix, lower-cased, with anything
// outside [a-z0-9._-] replaced by '-'. "images/Alpine_3.19.tar.gz" gives
// "alpine_3.19" -> "alpine-3.19".
func DeriveImageID(key string) string {
	base := strings.ToLower(path.Base(key))
	for _, suf := range archiveSuffixes {
		if strings.HasSuffix(base, suf) {
			base = strings.TrimSuffix(base, suf)
			break
		}
	}
	id := strings.Trim(invalidIDChars.ReplaceAllString(strings.ReplaceAll(base, "_", "-"), "-"), "-.")
	if id == "" {
		id = "image"
	}
	return id
}

// DeriveRef is the default image reference of an image id:
// images.flyio.local/<id>:latest.
func DeriveRef(imageID string) string { return RefDomain + "/" + imageID + ":latest" }
