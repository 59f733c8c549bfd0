package lazy_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/superfly/flyio-image-manager/blockimage"
	"github.com/superfly/flyio-image-manager/lazy"
)

// The file device is attached over the cache file the origin opened and
// verified chunks into, never over whatever the path names at the time
// of the switch: a cache replaced by a symlink (the directory is
// writable by the operator) or by another file is refused, and the
// origin stays on its served device.
func TestSwitchRefusesAReplacedCacheFile(t *testing.T) {
	for _, how := range []string{"symlink", "other file"} {
		t.Run(how, func(t *testing.T) {
			st, a := newMemStore(), newFakeAttach()
			img := smallImage(t, st, 11)
			dir := t.TempDir()
			held := blockimage.ChunkKey(prefix, img.man.Chunks[1].Digest)
			st.setFail(func(key string) error {
				if key == held {
					return errors.New("held back")
				}
				return nil
			})
			cfg := a.config(dir, st)
			cfg.RetryMin, cfg.RetryMax = 10*time.Millisecond, 20*time.Millisecond
			m := openManager(t, cfg)
			if err := m.Create(context.Background(), "base-11", img.man); err != nil {
				t.Fatal(err)
			}
			n := len(img.man.Chunks)
			waitFor(t, "all but the held chunk", func() bool { return statusOf(t, m, "base-11").ChunksPresent == n-1 })

			cache := filepath.Join(dir, "base-11", "cache")
			decoy := filepath.Join(t.TempDir(), "decoy")
			if err := os.WriteFile(decoy, make([]byte, img.man.DeviceSize), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(cache, cache+".moved"); err != nil {
				t.Fatal(err)
			}
			var err error
			if how == "symlink" {
				err = os.Symlink(decoy, cache)
			} else {
				err = os.Rename(decoy, cache)
			}
			if err != nil {
				t.Fatal(err)
			}
			st.setFail(nil)
			waitFor(t, "the switch refused", func() bool {
				s := statusOf(t, m, "base-11")
				return s.ChunksPresent == n && s.FetchErrors > 0 && strings.Contains(s.LastError, "attaching the cache file")
			})
			time.Sleep(100 * time.Millisecond) // a few retries
			s := statusOf(t, m, "base-11")
			if s.State == lazy.StateLocal || a.fileCount() != 0 || !strings.HasPrefix(s.DevicePath, "/dev/nbd") {
				t.Errorf("a replaced cache file was attached: %+v, %d file devices, events %q", s, a.fileCount(), a.eventList())
			}
		})
	}
}
