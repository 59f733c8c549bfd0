package config

import (
	"fmt"
	"path/filepath"
)

// Lazy configures lazily-backed bases (process-image --lazy): a base's
// device reads what it has not got from an origin the daemon serves from
// the block image over NBD, fetched on demand and in the background into
// a local cache, then switched to a loop device over that cache.
type Lazy struct {
	// Default makes process-image lazy when the request does not say
	// (and the key has a block image).
	Default bool `toml:"default"`
	// CacheDir holds one directory per origin: its manifest, its cache
	// file (as large as the device, sparse until fetched) and the bitmap
	// of chunks present. Default <root_dir>/lazy.
	CacheDir string `toml:"cache_dir"`
	// Prefetch is how many chunks the background fetch of one origin
	// fetches at once.
	Prefetch int `toml:"prefetch"`
	// PrefetchQuiet is how long an origin must have had no read before
	// its background fetch starts another chunk, and how long after the
	// attach it starts: the reads of a starting container go first. A
	// read waiting for a chunk always holds the background fetch back.
	// 0: no wait.
	PrefetchQuiet Seconds `toml:"prefetch_quiet"`
	// ReadTimeout bounds an on-demand fetch: past it the reader gets an
	// I/O error (and the next read tries again).
	ReadTimeout Seconds `toml:"read_timeout"`
}

func defaultLazy() Lazy { return Lazy{Prefetch: 4, PrefetchQuiet: 5, ReadTimeout: 60} }

func (l *Lazy) fill(rootDir string) {
	if l.CacheDir == "" {
		l.CacheDir = filepath.Join(rootDir, "lazy")
	}
}

func (l Lazy) validate() error {
	switch {
	case !filepath.IsAbs(l.CacheDir):
		return fmt.Errorf("lazy.cache_dir %q must be an absolute path", l.CacheDir)
	case l.Prefetch < 1 || l.Prefetch > 64:
		return fmt.Errorf("lazy.prefetch %d: want 1..64 concurrent chunk fetches", l.Prefetch)
	case l.PrefetchQuiet < 0 || l.PrefetchQuiet > 3600:
		return fmt.Errorf("lazy.prefetch_quiet %s: want 0 to 3600 seconds", l.PrefetchQuiet)
	case l.ReadTimeout <= 0 || l.ReadTimeout > 600:
		return fmt.Errorf("lazy.read_timeout %s: want more than 0 and at most 600 seconds", l.ReadTimeout)
	}
	return nil
}
