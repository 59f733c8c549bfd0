// Package imagename derives image ids from S3 keys: shared by the
// importer, which names what it imports, and the dashboard, which shows
// the id an import will get before it asks for one.
package imagename

import (
	"path"
	"regexp"
	"strings"
)

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
