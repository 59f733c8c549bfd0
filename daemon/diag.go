package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/superfly/flyio-image-manager/admin"
	"github.com/superfly/flyio-image-manager/adminwire"
	"github.com/superfly/flyio-image-manager/diag"
	"github.com/superfly/flyio-image-manager/gc"
	"github.com/superfly/flyio-image-manager/internal/logring"
)

// Diag gathers the daemon's diagnostics: everything the diag command
// bundles, seen from inside the daemon (its environment, its in-memory
// log, its open database), with the values of its secret environment
// variables scrubbed from every file.
func (b *backend) Diag(ctx context.Context) ([]admin.DiagFile, error) {
	env := os.Environ()
	files := diag.Collect(ctx, diag.Sources(diag.Inputs{
		GatheredBy: fmt.Sprintf("daemon (pid %d)", os.Getpid()),
		Version:    b.version,
		Pool:       b.pool.Name(),
		Config:     b.cfg,
		Environ:    env,
		Log:        RecentLog(),
		Store:      b.store,
		Runs:       func(context.Context) (any, error) { return b.importer.List() },
		GC: func(ctx context.Context) (*gc.Report, error) {
			return b.gc(ctx, admin.GCRequest{DryRun: true})
		},
		Extra: []diag.Source{
			diag.JSON("images.json", func(ctx context.Context) (any, error) { return b.Images(ctx) }),
			diag.JSON("snapshots.json", func(ctx context.Context) (any, error) { return b.Snapshots(ctx) }),
		},
	}))
	return adminwire.DiagFiles(diag.NewScrubber(env).Files(files)), nil
}

// RecentLog returns the last n lines of the in-memory log (all when
// n <= 0), with the values of secret environment variables scrubbed.
func (b *backend) RecentLog(n int) []string {
	r := logring.Installed()
	if r == nil {
		return []string{}
	}
	lines := r.Lines()
	if n > 0 && len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	f := diag.NewScrubber(os.Environ()).Files([]diag.File{{Data: []byte(strings.Join(lines, "\n"))}})
	if len(lines) == 0 {
		return []string{}
	}
	return strings.Split(string(f[0].Data), "\n")
}

// RecentLog is the daemon's in-memory log as the "daemon.log" source.
func RecentLog() diag.Source {
	return diag.Source{Name: "daemon.log", Gather: func(context.Context) ([]byte, error) {
		r := logring.Installed()
		if r == nil {
			return nil, errors.New("no in-memory log in this process")
		}
		lines := r.Lines()
		return []byte(strings.Join(lines, "\n") + "\n"), nil
	}}
}
