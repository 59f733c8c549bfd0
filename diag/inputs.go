package diag

import (
	"context"
	"fmt"

	"github.com/superfly/flyio-image-manager/gc"
	"github.com/superfly/flyio-image-manager/metadata"
)

// Inputs is what the gatherer has to hand: the daemon's own parts, or
// what the diag command could open itself with no daemon running.
type Inputs struct {
	// Who gathered it: "daemon" or "diag command (daemon not running)".
	GatheredBy string
	Version    string
	Pool       string
	// Config is the effective configuration (config.Config).
	Config any
	// Environ is the daemon's environment (os.Environ()).
	Environ []string
	// Log is the recent daemon log source ("daemon.log").
	Log Source
	// Store is the open metadata database; StoreErr why it is not.
	Store    *metadata.Store
	StoreErr error
	// Runs lists the process-image runs.
	Runs func(ctx context.Context) (any, error)
	// GC plans a gc dry run.
	GC func(ctx context.Context) (*gc.Report, error)
	// Extra sources (images, snapshots) go at the end.
	Extra []Source
}

// Sources lists every part of the bundle for in.
func Sources(in Inputs) []Source {
	srcs := []Source{
		Text("gathered-by.txt", in.GatheredBy+"\n"),
		Version("version.txt", in.Version),
		Kernel(),
		DMVersion(),
		Pool(in.Pool),
		{Name: "config.toml", Gather: func(context.Context) ([]byte, error) { return RedactConfig(in.Config) }},
		{Name: "environment.txt", Gather: func(context.Context) ([]byte, error) { return RedactEnv(in.Environ), nil }},
		in.Log,
	}
	if in.Store != nil {
		srcs = append(srcs, Bolt(in.Store))
	} else {
		srcs = append(srcs, failed("bolt-stats.json", in.StoreErr))
	}
	if in.Runs != nil {
		srcs = append(srcs, JSON("runs.json", in.Runs))
	}
	if in.GC != nil {
		srcs = append(srcs, GCDryRun(in.GC))
	}
	srcs = append(srcs, Mounts(in.Pool))
	return append(srcs, in.Extra...)
}

func failed(name string, err error) Source {
	if err == nil {
		err = fmt.Errorf("not available")
	}
	return Source{Name: name, Gather: func(context.Context) ([]byte, error) { return nil, err }}
}
