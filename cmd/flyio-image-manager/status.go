package main

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/superfly/flyio-image-manager/admin"
	"github.com/superfly/flyio-image-manager/adminwire"
	"github.com/superfly/flyio-image-manager/dmpool"
	"github.com/superfly/flyio-image-manager/internal/units"
	"github.com/superfly/flyio-image-manager/service"
)

var statusCommand = &cli.Command{
	Name:  "status",
	Usage: "print the daemon, the pool's usage and mode, the queues and recent runs; or one run with --run-id",
	Description: `Without a daemon answering on admin_address, status still prints the pool
(read from the kernel) and says the daemon is not running.
With --run-id it prints that run's state, progress (bytes read of the
object's size, entries, elapsed time, rate) and error.`,
	Flags: []cli.Flag{
		jsonFlag,
		&cli.StringFlag{Name: "run-id", Usage: "print only process-image run `ID`"},
	},
	Action: func(c *cli.Context) error {
		cfg, err := loadConfig(c)
		if err != nil {
			return err
		}
		cl := admin.NewClient(cfg.AdminAddress)
		w := c.App.Writer
		if id := c.String("run-id"); id != "" {
			run, err := cl.Run(c.Context, id)
			if err != nil {
				return err
			}
			v := newRunView(run, time.Now())
			if c.Bool("json") {
				return printJSON(w, v)
			}
			printRun(w, v)
			return nil
		}

		st, err := cl.Status(c.Context)
		running := true
		// The pool-full verdict: the daemon's, which refuses the work;
		// without a daemon, by the configuration's threshold.
		full := poolFull{threshold: st.FullThreshold, refusing: st.Refusing != ""}
		if errors.Is(err, admin.ErrDaemonNotRunning) {
			running = false
			if !c.Bool("json") {
				// Said first: the pool below may be unreadable too.
				fmt.Fprintf(w, "daemon:    not running (no answer on %s)\n", cfg.AdminAddress)
			}
			pool, err := dmpool.Inspect(c.Context, service.PoolConfig(cfg))
			if err != nil {
				return err
			}
			st = admin.Status{Pool: pool.Name()}
			ps, err := pool.Status(c.Context)
			if err != nil {
				return err
			}
			st.PoolState = adminwire.PoolStatus(ps)
			full = offlinePoolFull(cfg, ps)
		} else if err != nil {
			return err
		}
		if c.Bool("json") {
			return printJSON(w, statusView{DaemonRunning: running, PoolMode: poolMode(st.PoolState), Status: st})
		}
		if running {
			printDaemon(w, st.Daemon)
		}
		fmt.Fprintf(w, "pool %s\n", st.Pool)
		printPoolStatus(w, cfg, st.PoolState, full)
		if !running {
			return nil
		}
		fmt.Fprintf(w, "  snapshots: %s\n  devices:   %s\n  images:    %d imported\n", counts(st.Snapshots), counts(st.Devices), st.Images)
		printTrouble(w, st.Trouble, time.Now())
		printGCProbes(w, st.GCProbes)
		fmt.Fprintln(w)
		printQueues(w, st.Queues)
		printOrigins(w, st.Origins, time.Now())
		fmt.Fprintln(w)
		printRuns(w, st.RecentRuns, time.Now())
		return nil
	},
}

// statusView is status --json: the daemon's answer, or only the pool
// when no daemon runs.
type statusView struct {
	DaemonRunning bool   `json:"daemon_running"`
	PoolMode      string `json:"pool_mode"`
	admin.Status
}

func printDaemon(w io.Writer, d admin.DaemonInfo) {
	fmt.Fprintf(w, "daemon:    running, version %s, pid %d, up %s (since %s)\n", d.Version, d.PID,
		units.Duration(time.Duration(d.UptimeSeconds*float64(time.Second))), d.Started.Local().Format(time.RFC3339))
	socks := []string{"snapshots " + d.Address, "admin " + d.AdminAddress}
	if d.MetricsAddress != "" {
		socks = append(socks, "metrics "+d.MetricsAddress)
	}
	if d.DebugAddress != "" {
		socks = append(socks, "debug "+d.DebugAddress)
	}
	fmt.Fprintf(w, "  sockets: %s\n", strings.Join(socks, ", "))
}

// poolMode is the pool's mode in one word or two: rw, ro, failed,
// out_of_data_space, with ", needs_check" when the kernel set it.
func poolMode(st admin.PoolStatus) string {
	mode := "rw"
	switch {
	case st.Fail:
		mode = "failed"
	case st.ReadOnly:
		mode = "ro"
	case st.OutOfDataSpace:
		mode = "out_of_data_space"
	}
	if st.NeedsCheck {
		mode += ", needs_check"
	}
	return mode
}

// runView is a run with the figures status --run-id derives from it.
type runView struct {
	admin.Run
	ElapsedSeconds float64 `json:"elapsed_seconds"`
	// Percent is of the object's size read so far.
	Percent float64 `json:"percent"`
	// RateBytesPerSecond is of the object read, over the elapsed time.
	RateBytesPerSecond float64 `json:"rate_bytes_per_second"`
}

func newRunView(r admin.Run, now time.Time) runView {
	end := now
	if r.State.Finished() && !r.Updated.IsZero() {
		end = r.Updated
	}
	v := runView{Run: r, ElapsedSeconds: end.Sub(r.Created).Seconds()}
	if r.Size > 0 {
		v.Percent = 100 * float64(r.CompressedBytes) / float64(r.Size)
	}
	if v.ElapsedSeconds > 0 {
		v.RateBytesPerSecond = float64(r.CompressedBytes) / v.ElapsedSeconds
	}
	return v
}

func (v runView) elapsed() time.Duration {
	return time.Duration(v.ElapsedSeconds * float64(time.Second))
}

func (v runView) rate() string { return units.Bytes(int64(v.RateBytesPerSecond)) + "/s" }

// progress is "1.2 GiB of 3.4 GiB (35.3%)".
func (v runView) progress() string {
	return fmt.Sprintf("%s of %s (%s)", units.Bytes(v.CompressedBytes), units.Bytes(v.Size), units.Percent(v.CompressedBytes, v.Size))
}

func printRun(w io.Writer, v runView) {
	t := newTable(w)
	fmt.Fprintf(t, "run:\t%s\n", v.ID)
	fmt.Fprintf(t, "state:\t%s\n", v.State)
	fmt.Fprintf(t, "object:\ts3://%s/%s (etag %s)\n", v.Bucket, v.Key, v.ETag)
	fmt.Fprintf(t, "image:\t%s (id %s)\n", v.Ref, v.ImageID)
	fmt.Fprintf(t, "progress:\t%s read, %d entries, %s written\n", v.progress(), v.Entries, units.Bytes(v.Bytes))
	fmt.Fprintf(t, "elapsed:\t%s (since %s)\n", units.Duration(v.elapsed()), v.Created.Local().Format(time.RFC3339))
	fmt.Fprintf(t, "rate:\t%s\n", v.rate())
	if v.ChainID != "" {
		fmt.Fprintf(t, "base:\t%s\n", v.ChainID)
	}
	if v.Error != "" {
		fmt.Fprintf(t, "error:\t%s\n", v.Error)
	}
	t.Flush()
}

// printRuns is the recent-runs table of status.
func printRuns(w io.Writer, runs []admin.Run, now time.Time) {
	if len(runs) == 0 {
		fmt.Fprintln(w, "runs: none")
		return
	}
	t := newTable(w)
	fmt.Fprintln(t, "RUN\tSTATE\tS3 KEY\tPROGRESS\tENTRIES\tELAPSED\tCREATED\tERROR")
	for _, r := range runs {
		v := newRunView(r, now)
		fmt.Fprintf(t, "%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", r.ID, r.State, r.Key, v.progress(), r.Entries,
			units.Duration(v.elapsed()), units.Ago(r.Created, now), oneLine(r.Error, 60))
	}
	t.Flush()
}

// oneLine keeps a table row on one line.
func oneLine(s string, max int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > max {
		s = s[:max-3] + "..."
	}
	return s
}

// printGCProbes names the gc probe devices left active: a gc that died
// inside its live-pool check, whose probe is open so the start did not
// remove it.
func printGCProbes(w io.Writer, probes []admin.GCProbe) {
	for _, p := range probes {
		fmt.Fprintf(w, "  gc probe:  %s (thin id %d, open %d) left by a gc that died; remove it with 'dmsetup remove %s' once nothing holds it open\n",
			p.Name, p.ThinID, p.OpenCount, p.Name)
	}
}
