package main

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/superfly/flyio-image-manager/admin"
)

// start is one import-to-first-output measurement.
type start struct {
	total, imp time.Duration // to the first line; of that, process-image
}

// read is one timed cat of the big file inside a container.
type read struct {
	secs   float64
	before admin.Origin // the lazy base's origin as the read began
}

type results struct {
	full, block, lazy  []start
	fullRead, lazyRead []read
	// held: lazy starts and reads with the prefetch held off
	// (prefetch_quiet of an hour), so the read is cold: every chunk it
	// needs comes from S3 on demand.
	held                []start
	coldRead            []read
	coldNote            []string // on-demand and prefetched chunks after each cold read
	bigSize             int64
	originsAfterDelete  []string // what status listed after each lazy delete
	lazyOriginAtStart   []string // the origin's chunks as each lazy start printed
	publishOut, lazyOut string
}

func measure(ctx context.Context, e *env, o options) (*results, error) {
	res := &results{bigSize: o.bigSize}
	have := false // the image is registered
	del := func() error {
		if !have {
			return nil
		}
		have = false
		return e.deleteImage(id)
	}
	for i := 0; i < o.n; i++ {
		if err := del(); err != nil {
			return nil, err
		}
		s, out, err := timedStart(e, fmt.Sprintf("full%d", i), "--s3-key", key)
		if err != nil {
			return nil, err
		}
		have = true
		if strings.Contains(out, "block image") {
			return nil, fmt.Errorf("the full import used a block image before one was published:\n%s", out)
		}
		logf("full %d: %s (process-image %s)", i, s.total.Round(time.Millisecond), s.imp.Round(time.Millisecond))
		res.full = append(res.full, s)
		r, err := readBig(ctx, e, fmt.Sprintf("rfull%d", i), "")
		if err != nil {
			return nil, err
		}
		logf("full %d: read %s in %.2fs", i, bigFile, r.secs)
		res.fullRead = append(res.fullRead, r)
	}
	out, err := e.fim("publish-base", "--image-id", id)
	if err != nil {
		return nil, err
	}
	res.publishOut = strings.TrimSpace(out)
	logf("publish-base:\n%s", out)

	for i := 0; i < o.n; i++ {
		if err := del(); err != nil {
			return nil, err
		}
		s, out, err := timedStart(e, fmt.Sprintf("block%d", i), "--s3-key", key, "--lazy=false")
		if err != nil {
			return nil, err
		}
		have = true
		if !strings.Contains(out, "filling from block image") {
			return nil, fmt.Errorf("process-image --lazy=false after publish-base does not fill from the block image:\n%s", out)
		}
		logf("block %d: %s (process-image %s)", i, s.total.Round(time.Millisecond), s.imp.Round(time.Millisecond))
		res.block = append(res.block, s)

		if err := del(); err != nil {
			return nil, err
		}
		st, err := e.status(ctx)
		if err != nil {
			return nil, err
		}
		res.originsAfterDelete = append(res.originsAfterDelete, originsLine(st.Origins))
		s, out, err = timedStart(e, fmt.Sprintf("lazy%d", i), "--s3-key", key, "--lazy")
		if err != nil {
			return nil, err
		}
		have = true
		res.lazyOut = strings.TrimSpace(out)
		if !strings.Contains(out, "usable now") {
			return nil, fmt.Errorf("process-image --lazy did not make a lazy base:\n%s", out)
		}
		o, err := lazyOrigin(ctx, e)
		if err != nil {
			return nil, err
		}
		res.lazyOriginAtStart = append(res.lazyOriginAtStart, fmt.Sprintf("%s %d/%d", o.State, o.ChunksPresent, o.ChunksTotal))
		logf("lazy %d: %s (process-image %s); origin %s %s %d/%d chunks", i, s.total.Round(time.Millisecond),
			s.imp.Round(time.Millisecond), o.Name, o.State, o.ChunksPresent, o.ChunksTotal)
		res.lazy = append(res.lazy, s)
		r, err := readBig(ctx, e, fmt.Sprintf("rlazy%d", i), o.Name)
		if err != nil {
			return nil, err
		}
		after, _ := lazyOrigin(ctx, e)
		logf("lazy %d: read %s in %.2fs; origin %s %d/%d chunks at the read's start (%d on demand, %d prefetched), %s %d/%d after, %d read errors",
			i, bigFile, r.secs, r.before.State, r.before.ChunksPresent, r.before.ChunksTotal, r.before.OnDemandFetches, r.before.Prefetched,
			after.State, after.ChunksPresent, after.ChunksTotal, after.ReadErrors)
		if after.ReadErrors > 0 {
			return nil, fmt.Errorf("the lazy origin answered %d reads with I/O errors (last: %s)", after.ReadErrors, after.LastError)
		}
		res.lazyRead = append(res.lazyRead, r)
	}
	if err := del(); err != nil {
		return nil, err
	}
	st, err := e.status(ctx)
	if err != nil {
		return nil, err
	}
	res.originsAfterDelete = append(res.originsAfterDelete, originsLine(st.Origins))
	if err := coldRounds(ctx, e, o, res); err != nil {
		return nil, err
	}
	return res, nil
}

// coldRounds restarts the daemon with the prefetch held off and, for -n
// rounds, times a lazy start and then the read of the big file: nothing
// but what the start read is in the cache, so the read is served from
// S3 on demand (checked: the prefetch fetched nothing).
func coldRounds(ctx context.Context, e *env, o options, res *results) error {
	if err := e.restartWith("prefetch_quiet = \"3600s\"\n"); err != nil {
		return fmt.Errorf("restarting with the prefetch held off: %w", err)
	}
	for i := 0; i < o.n; i++ {
		s, out, err := timedStart(e, fmt.Sprintf("held%d", i), "--s3-key", key, "--lazy")
		if err != nil {
			return err
		}
		if !strings.Contains(out, "usable now") {
			return fmt.Errorf("process-image --lazy did not make a lazy base:\n%s", out)
		}
		res.held = append(res.held, s)
		r, err := readBig(ctx, e, fmt.Sprintf("rcold%d", i), "x")
		if err != nil {
			return err
		}
		after, err := lazyOrigin(ctx, e)
		if err != nil {
			return err
		}
		note := fmt.Sprintf("%d/%d chunks before the read (%d prefetched), %d fetched on demand by it, %d prefetched after",
			r.before.ChunksPresent, r.before.ChunksTotal, r.before.Prefetched, after.OnDemandFetches-r.before.OnDemandFetches, after.Prefetched)
		logf("held %d: start %s (process-image %s); cold read of %s in %.2fs: %s", i, s.total.Round(time.Millisecond),
			s.imp.Round(time.Millisecond), bigFile, r.secs, note)
		if after.ReadErrors > 0 {
			return fmt.Errorf("the lazy origin answered %d reads with I/O errors (last: %s)", after.ReadErrors, after.LastError)
		}
		if after.Prefetched > 0 {
			return fmt.Errorf("the prefetch fetched %d chunks with prefetch_quiet an hour: the cold read is not cold", after.Prefetched)
		}
		res.coldRead = append(res.coldRead, r)
		res.coldNote = append(res.coldNote, note)
		if err := e.deleteImage(id); err != nil {
			return err
		}
	}
	return nil
}

// timedStart drops the page cache, runs process-image with args and
// times from its start to the first line of a container on the image.
func timedStart(e *env, cid string, args ...string) (start, string, error) {
	dropCaches()
	t0 := time.Now()
	if slices.Contains(args, "--lazy") {
		tl := watch(e, t0, 250*time.Millisecond)
		defer func() {
			tl.stop()
			logf("%s timeline (t:present(on demand/prefetched)): %s", cid, tl)
		}()
	}
	out, err := e.fim(append([]string{"process-image"}, args...)...)
	if err != nil {
		return start{}, out, err
	}
	imp := time.Since(t0)
	took, line, all, err := e.firstLine(t0, "run", "--rm", "--snapshotter", "flyio", ref, cid, "/bin/cat", "/etc/variant")
	if err != nil {
		return start{}, out, err
	}
	if line != hello {
		return start{}, out, fmt.Errorf("the container printed %q, want %q:\n%s", line, hello, all)
	}
	return start{total: took, imp: imp}, out, nil
}

// readBig drops the page cache and times, inside a new container on the
// image, a cat of the big file (busybox time: the container's start is
// not in it). With origin set it records that origin first.
func readBig(ctx context.Context, e *env, cid, origin string) (read, error) {
	dropCaches()
	var r read
	if origin != "" {
		o, err := lazyOrigin(ctx, e)
		if err != nil {
			return r, err
		}
		r.before = o
	}
	out, err := e.ctr("run", "--rm", "--snapshotter", "flyio", ref, cid, "/bin/sh", "-c",
		"/bin/busybox time -f %e /bin/cat "+bigFile+" > /dev/null")
	if err != nil {
		return r, err
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	secs, err := strconv.ParseFloat(strings.TrimSpace(lines[len(lines)-1]), 64)
	if err != nil {
		return r, fmt.Errorf("reading %s: no time in the output %q", bigFile, out)
	}
	r.secs = max(secs, 0.005) // busybox time has 10 ms steps
	return r, nil
}

// lazyOrigin is the one origin status lists that is not yet complete, or
// else the only one.
func lazyOrigin(ctx context.Context, e *env) (admin.Origin, error) {
	st, err := e.status(ctx)
	if err != nil {
		return admin.Origin{}, err
	}
	if len(st.Origins) == 0 {
		return admin.Origin{}, fmt.Errorf("status lists no origin after process-image --lazy")
	}
	for _, o := range st.Origins {
		if o.State == "fetching" {
			return o, nil
		}
	}
	return st.Origins[len(st.Origins)-1], nil
}

func originsLine(os []admin.Origin) string {
	if len(os) == 0 {
		return "none"
	}
	var l []string
	for _, o := range os {
		l = append(l, fmt.Sprintf("%s %s %d/%d", o.Name, o.State, o.ChunksPresent, o.ChunksTotal))
	}
	return strings.Join(l, ", ")
}
