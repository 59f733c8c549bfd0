package e2e

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/identity"

	"github.com/superfly/flyio-image-manager/internal/dmtest"
	"github.com/superfly/flyio-image-manager/s3fetch/s3test"
	"github.com/superfly/flyio-image-manager/test/harness"
	"github.com/superfly/flyio-image-manager/test/ociarchive"
)

// TestLayerStoreFillDoesNotBlockNode is issue 10 B6. containerd holds its
// snapshotter lock (for reading) while our Prepare fills a layer from the
// S3 layer store; its GC takes that lock for writing, and Go's RWMutex
// makes every later reader wait behind a waiting writer. Here the S3
// download of a layer is held at a gate (a throttle to a standstill)
// while containerd collects garbage of the flyio snapshotter and another
// image is run: the GC and the other image's `ctr run` must complete
// while the fill is still held, the held pull must complete too (the
// Prepare stopped waiting after remote_fill_wait and containerd fetched
// that layer itself), and once the gate opens the fill finishes in the
// background, commits the layer, and S3 was read once.
func TestLayerStoreFillDoesNotBlockNode(t *testing.T) {
	dmtest.Require(t)
	if _, err := os.Stat(registryBin); err != nil {
		t.Fatalf("%v (apt-get install docker-registry, or run test/tools.sh)", err)
	}
	if os.Getenv("FLYIO_REQUIRE_DM") == "1" {
		t.Setenv(s3test.RequireEnv, "1")
	}
	// part_timeout: the s3 client must not give up on the held GET and
	// resume it (which would end the fill) while the test holds it.
	s := startS3Env(t, withDaemonTOML("layer_prefix = \"layers/\"\npart_timeout = 280"),
		withSnapshotterTOML("remote_fill_wait = 2"))
	reg := newRecordingProxy(t, startRegistry(t, s.env))

	// Image A in the registry and its layers in the layer store, as in
	// TestLayerStorePull; then forgotten locally.
	const local = "docker.io/flyio/e2e:1"
	remote := reg.addr + "/test/fillwait:1"
	s.importImage(local)
	s.Ctr("images", "tag", local, remote)
	s.Ctr("images", "push", "--plain-http", remote)
	s.Ctr("images", "rm", "--sync", local, remote)
	s.Ctr("images", "pull", "--plain-http", "--snapshotter", "flyio", remote)
	out, err := s.pushLayers(remote)
	if err != nil {
		t.Fatal(err)
	}
	layers := parsePushLayers(t, out, "uploaded")
	s.Ctr("images", "rm", "--sync", remote)

	// Image B, another image, to run during the fill; image C, whose
	// removal during the fill makes containerd's GC remove a flyio
	// snapshot (so the GC takes the flyio snapshotter's lock).
	other := importVariant(t, s.env, "docker.io/flyio/other:1", "other.txt", "another image\n")
	garbage := importVariant(t, s.env, "docker.io/flyio/garbage:1", "garbage.txt", "collected\n")

	gate := make(chan struct{})
	var openGate sync.Once
	release := func() { openGate.Do(func() { close(gate) }) }
	t.Cleanup(release)
	s.proxy.ResetLog()
	s.proxy.Inject(&s3test.Rule{
		Match: func(r *http.Request) bool {
			return r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/layers/blobs/")
		},
		Times: 1,
		Fault: s3test.Fault{Gate: gate},
	})

	pullDone := make(chan error, 1)
	go func() {
		_, err := s.CtrErr("images", "pull", "--plain-http", "--snapshotter", "flyio", remote)
		pullDone <- err
	}()
	for start := time.Now(); s.proxy.Gated() == 0; time.Sleep(100 * time.Millisecond) {
		select {
		case err := <-pullDone:
			t.Fatalf("the pull ended before any layer download reached the gate: %v", err)
		default:
		}
		if time.Since(start) > 2*time.Minute {
			t.Fatal("no layer download from the layer store reached the gate")
		}
	}
	var gatedKey string
	for _, r := range s.proxy.Requests() {
		if strings.HasPrefix(r.Fault, "gate") {
			gatedKey = strings.TrimPrefix(r.Path, "/"+s.gw.Bucket+"/")
		}
	}
	t.Logf("fill held at the gate: GET s3://%s/%s", s.gw.Bucket, gatedKey)

	gcDone := make(chan error, 1)
	go func() {
		_, err := s.CtrErr("images", "rm", "--sync", garbage)
		gcDone <- err
	}()
	// Not an assertion: lets the GC reach containerd's snapshotter lock
	// before the other image's run asks for it.
	time.Sleep(2 * time.Second)

	// Bounded only so that a node wedged behind the fill fails the test
	// instead of hanging it; the fill is held for as long as this takes.
	ctrBin := filepath.Join(s.Tools, "ctr")
	got, err := harness.Run(2*time.Minute, s.Path, nil, ctrBin, "--address", s.Sock, "--namespace", namespace,
		"run", "--rm", "--snapshotter", "flyio", other, "fillwait-other", "/bin/cat", "/other.txt")
	held := s.proxy.Gated() > 0
	if err != nil {
		t.Errorf("another image's ctr run did not complete while the fill was held (a GC waited for containerd's lock behind our Prepare): %v", err)
	} else if got != "another image\n" {
		t.Errorf("ctr run of %s printed %q", other, got)
	}
	if !held {
		t.Errorf("the held download was let go before the other run completed; the test proves nothing")
	}
	waitOrFail := func(what string, ch <-chan error) {
		select {
		case err := <-ch:
			if err != nil {
				t.Errorf("%s: %v", what, err)
			}
		case <-time.After(2 * time.Minute):
			t.Errorf("%s did not complete while the fill was held", what)
		}
	}
	waitOrFail("containerd's GC (ctr images rm --sync)", gcDone)
	// The held layer's Prepare stopped waiting after remote_fill_wait:
	// containerd fetched that layer from the registry, the pull ends.
	waitOrFail("the pull of the image whose layer is held", pullDone)
	if s.proxy.Gated() == 0 {
		t.Errorf("the held download ended before the gate opened")
	}

	// The fill goes on once S3 answers, and commits its layer. Every fill
	// a Prepare stopped waiting for (the held one, and any other that
	// outlasted remote_fill_wait on this slow VM) must end committed. Its
	// daemon log line is the proof, not a Walk: a committed fill no
	// namespace has adopted is containerd's garbage (its GC removes every
	// snapshot of ours no namespace refers to), and a GC may run at any
	// time.
	release()
	var left []string
	for start := time.Now(); ; time.Sleep(2 * time.Second) {
		log := s.DaemonLog()
		if m := backgroundFillFailed.FindString(log); m != "" {
			t.Fatalf("a background fill failed: %s", m)
		}
		left = left[:0]
		for _, m := range stillFilling.FindAllStringSubmatch(log, -1) {
			if !strings.Contains(log, fmt.Sprintf("layer filled from the remote store in the background as \\\"remote/%s\\\"", m[1])) {
				left = append(left, m[1])
			}
		}
		if len(left) == 0 {
			break
		}
		if time.Since(start) > 3*time.Minute {
			t.Fatalf("background fills not committed 3 min after the gate opened: %v; daemon log:\n%s", left, tail(log, 40))
		}
	}
	if !strings.Contains(s.DaemonLog(), layerRef(t, layers, gatedKey)+" is still being filled") {
		t.Errorf("the held layer's Prepare did not leave it to containerd")
	}
	t.Logf("remote fills now: %v", remoteFills(t, s.Cfg.Address))
	if n := s.gets(gatedKey); n != 1 {
		t.Errorf("%d GETs of s3://%s/%s, want 1 (fetch once)", n, s.gw.Bucket, gatedKey)
	}
	got = s.Ctr("run", "--rm", "--snapshotter", "flyio", remote, "fillwait-a", "/bin/sh", "-c", ociarchive.CheckScript)
	if got != ociarchive.CheckWant {
		t.Errorf("container view of the image:\n%s\nwant:\n%s", got, ociarchive.CheckWant)
	}

	// The layer filled in the background is for the next pull of it: a
	// containerd GC (it removes every snapshot of ours no namespace names)
	// must not collect it before another namespace pulls the image, which
	// adopts it instead of fetching it from S3 again.
	s.Ctr("images", "rm", "--sync", other)
	const nsB = "fillwait-b"
	if out, err := s.CtrNS(nsB, "images", "pull", "--plain-http", "--snapshotter", "flyio", remote); err != nil {
		t.Fatalf("pull in namespace %s: %v\n%s", nsB, err, out)
	}
	if n := s.gets(gatedKey); n != 1 {
		t.Errorf("after a GC and a pull in another namespace: %d GETs of s3://%s/%s, want 1 (the layer filled in the background was collected, not adopted)", n, s.gw.Bucket, gatedKey)
	}
	got, err = s.CtrNS(nsB, "run", "--rm", "--snapshotter", "flyio", remote, "fillwait-b", "/bin/sh", "-c", ociarchive.CheckScript)
	if err != nil || got != ociarchive.CheckWant {
		t.Errorf("container of namespace %s: %v\n%s\nwant:\n%s", nsB, err, got, ociarchive.CheckWant)
	}
}

// importVariant imports into the flyio snapshotter an image of busybox
// and one layer holding file (so its top layer is its own) and returns
// its ref.
func importVariant(t *testing.T, e *env, ref, file, body string) string {
	t.Helper()
	base, err := ociarchive.BusyboxLayer(ociarchive.BusyboxPath)
	if err != nil {
		t.Fatal(err)
	}
	img := ociarchive.Image{Ref: ref, Layers: []ociarchive.Layer{base, {ociarchive.File(file, 0o644, body)}}, Cmd: []string{"/bin/cat", "/" + file}}
	path := filepath.Join(e.Dir, file+".tar")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := ociarchive.Write(f, img); err != nil {
		t.Fatal(err)
	}
	f.Close()
	e.Ctr("images", "import", "--snapshotter", "flyio", path)
	return ref
}

var (
	stillFilling         = regexp.MustCompile(`layer (sha256:[0-9a-f]{64}) is still being filled from the remote store`)
	backgroundFillFailed = regexp.MustCompile(`background fill \S+ from the remote store failed[^\n]*`)
)

// layerRef is the chain id (the snapshot ref containerd's unpacker asks
// for) of the pushed layer stored under key.
func layerRef(t *testing.T, layers []pushedLayer, key string) string {
	t.Helper()
	var diffIDs []digest.Digest
	for _, l := range layers {
		diffIDs = append(diffIDs, digest.Digest(l.diffID))
		if l.key == key {
			return identity.ChainID(diffIDs).String()
		}
	}
	t.Fatalf("no pushed layer is stored under %s: %v", key, layers)
	return ""
}
