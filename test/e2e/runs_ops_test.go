package e2e

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/superfly/flyio-image-manager/admin"
	"github.com/superfly/flyio-image-manager/internal/dmtest"
	"github.com/superfly/flyio-image-manager/internal/units"
	"github.com/superfly/flyio-image-manager/s3fetch/s3test"
)

// queuesJSON runs queue-status --json (with args) and decodes it.
func (s *s3env) queuesJSON(args ...string) []admin.QueueInfo {
	s.T.Helper()
	out, err := s.flyio(append([]string{"queue-status", "--json"}, args...)...)
	if err != nil {
		s.T.Fatal(err)
	}
	var qs []admin.QueueInfo
	if err := json.Unmarshal([]byte(out), &qs); err != nil {
		s.T.Fatalf("queue-status --json: %v\n%s", err, out)
	}
	return qs
}

// unpacksLine is the unpacks queue as "id:pos id:pos ...".
func unpacksLine(qs []admin.QueueInfo) string {
	var parts []string
	for _, q := range qs {
		if q.Name != "unpacks" {
			continue
		}
		for _, r := range q.Runs {
			parts = append(parts, r.ID+":"+strconv.Itoa(r.Position))
		}
	}
	return strings.Join(parts, " ")
}

// TestRunsQueueAndCancel starts three imports with an unpacks queue of
// one while the first one's download is stalled, checks that
// queue-status shows one active and two waiting in order, cancels the
// queued one and the running one, and checks that they left nothing
// (no import snapshot, nothing for gc, no image), that the third goes on
// to completion, and that the cancelled key imports again from scratch.
func TestRunsQueueAndCancel(t *testing.T) {
	dmtest.Require(t)
	// 64 KiB parts (the bare key lands in startS3Env's [s3] table): the
	// extractor gets each part whole, so a's stall below leaves it with
	// exactly its first part read.
	const partSize = 64 << 10
	s := startS3Env(t, withDaemonEnv("UNPACK_QUEUE_SIZE=1"), withDaemonTOML(fmt.Sprintf("part_size = %d", partSize)))
	keys := []string{"images/cancel-a.tar", "images/cancel-b.tar", "images/cancel-c.tar"}
	for _, k := range keys {
		s.putBusybox(k, "hello from "+k+"\n")
	}
	// a's download stalls after its first part: every GET of the second
	// part (the retries too) hangs, long enough for the test (and short
	// of the part timeout's retries giving up).
	s.proxy.Inject(&s3test.Rule{Match: s3test.MatchRangeFrom(keys[0], partSize), Fault: s3test.Fault{StallHeaders: 10 * time.Minute}})

	start := func(key string) string {
		out, err := s.processImage(cmdTimeout, "--s3-key", key, "--no-wait")
		if err != nil {
			t.Fatal(err)
		}
		return runID(t, out)
	}
	a := start(keys[0])
	ra := s.pollRun(a, 2*time.Minute, func(r admin.Run) bool {
		return r.State.Finished() || r.State == admin.RunExtracting
	})
	if ra.State != admin.RunExtracting {
		t.Fatalf("run %s of the stalled key is %s (%s), want extracting", a, ra.State, ra.Error)
	}
	// While stalled it shows the bytes read so far, not 0 B: the live
	// run follows the S3 reads, not only the extractor's Progress, which
	// waits for 4 MiB of tar stream.
	ra = s.pollRun(a, 30*time.Second, func(r admin.Run) bool { return r.State.Finished() || r.CompressedBytes > 0 })
	if ra.State != admin.RunExtracting || ra.CompressedBytes != partSize {
		t.Errorf("run %s while stalled: %s, %d bytes read, want extracting with %d (its first part)", a, ra.State, ra.CompressedBytes, partSize)
	}
	b := start(keys[1])
	c := start(keys[2])
	if got, want := unpacksLine(s.queuesJSON()), a+":0 "+b+":1 "+c+":2"; got != want {
		t.Fatalf("unpacks queue %q, want %q (a active, then b, c in order)", got, want)
	}
	qs := s.queuesJSON("--queue", "unpacks")
	if len(qs) != 1 || qs[0].Capacity != 1 || qs[0].Active != 1 || qs[0].Waiting != 2 || qs[0].Runs[1].State != admin.RunQueued {
		t.Errorf("queue-status --queue unpacks: %+v", qs)
	}
	dl := s.queuesJSON("--queue", "downloads")
	if len(dl) != 1 || dl[0].Active < 1 || len(dl[0].Runs) != 1 || dl[0].Runs[0].ID != a {
		t.Errorf("queue-status --queue downloads: %+v, want run %s downloading", dl, a)
	}
	if out, err := s.flyio("queue-status", "--queue", "bogus"); err == nil || !strings.Contains(out, `unknown queue "bogus"`) {
		t.Errorf("queue-status --queue bogus: %v %q", err, out)
	}
	human, err := s.flyio("queue-status")
	t.Logf("queue-status:\n%s", human)
	if err != nil || !strings.Contains(human, "unpacks    1         1       2") {
		t.Errorf("queue-status table: %v", err)
	}

	// status: the daemon, the queues and the runs, in JSON and as text.
	out, err := s.flyio("status", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		DaemonRunning bool   `json:"daemon_running"`
		PoolMode      string `json:"pool_mode"`
		Daemon        struct {
			Version      string `json:"version"`
			PID          int    `json:"pid"`
			AdminAddress string `json:"admin_address"`
		} `json:"daemon"`
		Queues     []admin.QueueInfo `json:"queues"`
		RecentRuns []admin.Run       `json:"recent_runs"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	if !st.DaemonRunning || st.PoolMode != "rw" || st.Daemon.Version == "" || st.Daemon.PID == 0 || st.Daemon.AdminAddress != s.Cfg.AdminAddress {
		t.Errorf("status --json daemon fields: %+v", st)
	}
	if len(st.Queues) != 2 || len(st.RecentRuns) != 3 || st.RecentRuns[0].ID != c || st.RecentRuns[2].ID != a {
		t.Errorf("status --json: %d queues, runs %v; want 2 queues and c, b, a newest first", len(st.Queues), st.RecentRuns)
	}
	text := s.status()
	t.Logf("status:\n%s", text)
	for _, want := range []string{"daemon:    running, version ", "mode:      rw", "QUEUE", a, "extracting"} {
		if !strings.Contains(text, want) {
			t.Errorf("status lacks %q", want)
		}
	}
	usedBlocks(t, text) // still parses

	out, err = s.flyio("status", "--run-id", a)
	t.Logf("status --run-id %s:\n%s", a, out)
	if err != nil || !strings.Contains(out, "state:     extracting") || !strings.Contains(out, "rate:") {
		t.Errorf("status --run-id: %v", err)
	}
	if want := "progress:  " + units.Bytes(partSize) + " of "; !strings.Contains(out, want) {
		t.Errorf("status --run-id of the stalled run lacks %q", want)
	}
	out, err = s.flyio("status", "--run-id", a, "--json")
	var rv struct {
		admin.Run
		Elapsed float64 `json:"elapsed_seconds"`
		Percent float64 `json:"percent"`
	}
	if err != nil || json.Unmarshal([]byte(out), &rv) != nil || rv.ID != a || rv.Elapsed <= 0 || rv.Size <= 0 {
		t.Errorf("status --run-id --json: %v %+v\n%s", err, rv, out)
	}

	// Cancel the queued run, then the running one.
	out, err = s.flyio("cancel", "--run-id", b)
	t.Logf("cancel %s: %v\n%s", b, err, out)
	if err != nil || !strings.Contains(out, "cancelled") || !strings.Contains(out, "while queued") {
		t.Errorf("cancel of the queued run: %v %q", err, out)
	}
	if got, want := unpacksLine(s.queuesJSON()), a+":0 "+c+":1"; got != want {
		t.Errorf("unpacks queue after cancelling %s: %q, want %q", b, got, want)
	}
	out, err = s.flyio("cancel", "--run-id", a)
	t.Logf("cancel %s: %v\n%s", a, err, out)
	if err != nil || !strings.Contains(out, "cancelled by the operator while extracting") {
		t.Errorf("cancel of the running run: %v %q", err, out)
	}
	// Its half-filled snapshot is gone at once.
	if left := s.importSnapshots(); slices.ContainsFunc(left, func(l string) bool { return strings.Contains(l, a) }) {
		t.Errorf("cancelled run %s left its snapshot: %q", a, left)
	}
	for _, id := range []string{a, b} {
		if r, _ := s.admin().Run(t.Context(), id); r.State != admin.RunCancelled {
			t.Errorf("run %s: %s, want cancelled", id, r.State)
		}
	}
	// Errors: a finished run names its state, an unknown one its id.
	if out, err := s.flyio("cancel", "--run-id", a); err == nil || !strings.Contains(out, "is already cancelled") {
		t.Errorf("second cancel of %s: %v %q", a, err, out)
	}
	if out, err := s.flyio("cancel", "--run-id", "no-such-run"); err == nil || !strings.Contains(out, "no-such-run") || !strings.Contains(out, "no such run") {
		t.Errorf("cancel of an unknown run: %v %q", err, out)
	}

	// The queue moves on: c runs to completion.
	if r := s.waitRun(c, 5*time.Minute); r.State != admin.RunDone {
		t.Fatalf("run %s after the cancels: %s: %s", c, r.State, r.Error)
	}
	if left := s.importSnapshots(); len(left) > 0 {
		t.Errorf("import snapshots left after the cancels: %q", left)
	}
	// On our side too: containerd drops its record at once and removes
	// the snapshot from us in its next GC pass; then only c's base stays.
	deadline := time.Now().Add(2 * time.Minute)
	for st := s.status(); !strings.Contains(st, "snapshots: 1 Committed\n"); st = s.status() {
		if time.Now().After(deadline) {
			t.Errorf("the cancelled runs' snapshots are still on our side after 2 min:\n%s", st)
			break
		}
		time.Sleep(time.Second)
	}
	if rep := s.gcReport("--dry-run"); len(rep.Items) > 0 {
		t.Errorf("gc --dry-run after the cancels lists %d items: %+v", len(rep.Items), rep.Items)
	}
	imgs := s.Ctr("images", "ls", "-q")
	for _, name := range []string{"cancel-a", "cancel-b"} {
		if strings.Contains(imgs, name) {
			t.Errorf("a cancelled run registered an image %s:\n%s", name, imgs)
		}
	}

	// A fresh process-image of the cancelled key starts a new run.
	s.proxy.ClearFaults()
	out, err = s.processImage(cmdTimeout, "--s3-key", keys[0])
	if err != nil {
		t.Fatal(err)
	}
	if again := runID(t, out); again == a {
		t.Errorf("process-image after cancel returned the cancelled run %s", a)
	}
	if got := s.Ctr("run", "--rm", "--snapshotter", "flyio", "images.flyio.local/cancel-a:latest", "ca", "/bin/sh", "-c", "cat /etc/hello"); got != "hello from "+keys[0]+"\n" {
		t.Errorf("container of the re-imported key printed %q", got)
	}
	t.Logf("status at the end:\n%s", s.status())

	// Without a daemon status still shows the pool and says so.
	s.StopDaemon()
	down := s.status()
	t.Logf("status without the daemon:\n%s", down)
	if !strings.Contains(down, "daemon:    not running") {
		t.Errorf("status without the daemon does not say it is not running")
	}
	usedBlocks(t, down)
	out, err = s.flyio("status", "--json")
	if err != nil || !strings.Contains(out, `"daemon_running": false`) || !strings.Contains(out, `"pool_mode": "rw"`) {
		t.Errorf("status --json without the daemon: %v\n%s", err, out)
	}
	if out, err := s.flyio("queue-status"); err == nil || !strings.Contains(out, "daemon is not running") {
		t.Errorf("queue-status without the daemon: %v %q", err, out)
	}

	// A restart resumes no cancelled run.
	s.StartDaemon("daemon.log")
	s.WaitDaemon()
	for _, id := range []string{a, b} {
		if r, err := s.admin().Run(t.Context(), id); err != nil || r.State != admin.RunCancelled {
			t.Errorf("run %s after a restart: %s %v, want cancelled", id, r.State, err)
		}
	}
	if got := unpacksLine(s.queuesJSON()); got != "" {
		t.Errorf("unpacks queue after a restart: %q, want empty (nothing resumed)", got)
	}
}
