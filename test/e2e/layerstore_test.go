package e2e

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"testing"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/v2/core/snapshots"
	snproxy "github.com/containerd/containerd/v2/core/snapshots/proxy"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/superfly/flyio-image-manager/internal/dmtest"
	"github.com/superfly/flyio-image-manager/s3fetch/s3test"
	"github.com/superfly/flyio-image-manager/test/ociarchive"
)

// TestLayerStorePull pushes an image's layers to the S3 layer store with
// push-layers, forgets the image locally and pulls it from the registry
// again: the daemon must fill every layer from S3 during the unpack, so
// the registry serves the manifest and config but no layer blob.
func TestLayerStorePull(t *testing.T) {
	dmtest.Require(t)
	if _, err := os.Stat(registryBin); err != nil {
		t.Fatalf("%v (apt-get install docker-registry, or run test/tools.sh)", err)
	}
	if os.Getenv("FLYIO_REQUIRE_DM") == "1" {
		// Where dm is real the tools are installed: a missing versitygw
		// is a broken setup, not a reason to skip.
		t.Setenv(s3test.RequireEnv, "1")
	}
	// The bare key lands in startS3Env's [s3] table, which is the last
	// one in the daemon's config; checked below.
	s := startS3Env(t, withDaemonTOML(`layer_prefix = "layers/"`))
	if s.Cfg.S3.LayerPrefix != "layers/" {
		t.Fatalf("daemon config has layer_prefix %q, want \"layers/\"", s.Cfg.S3.LayerPrefix)
	}
	reg := newRecordingProxy(t, startRegistry(t, s.env))

	const local = "docker.io/flyio/e2e:1"
	remote := reg.addr + "/test/layers:1"
	s.importImage(local)
	s.Ctr("images", "tag", local, remote)
	s.Ctr("images", "push", "--plain-http", remote)
	s.Ctr("images", "rm", "--sync", local, remote)

	// A normal pull: the layers come from the registry into the content
	// store, which push-layers reads. It also proves the proxy sees blob
	// GETs, so their absence later means something.
	reg.reset()
	s.Ctr("images", "pull", "--plain-http", "--snapshotter", "flyio", remote)
	firstPull := reg.requests()

	out, err := s.pushLayers(remote)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("push-layers:\n%s", out)
	layers := parsePushLayers(t, out, "uploaded")
	for _, l := range layers {
		if !hasBlobRequest(firstPull, l.digest) {
			t.Fatalf("the first pull made no request for layer %s; requests:\n%s", l.digest, strings.Join(firstPull, "\n"))
		}
	}
	out, err = s.pushLayers(remote)
	if err != nil {
		t.Fatal(err)
	}
	if again := parsePushLayers(t, out, "already there"); len(again) != len(layers) {
		t.Errorf("second push-layers reported %d layers, the first %d:\n%s", len(again), len(layers), out)
	}

	// Forget the image: content and snapshots, waiting for containerd's gc.
	s.Ctr("images", "rm", "--sync", remote)
	if out := s.Ctr("snapshots", "--snapshotter", "flyio", "ls"); countLines(out) != 1 {
		t.Fatalf("snapshots left after removing the image:\n%s", out)
	}
	cl := s.Ctr("content", "ls")
	for _, l := range layers {
		if contentHas(cl, l.digest) {
			t.Fatalf("layer %s still in the content store after rm --sync:\n%s", l.digest, cl)
		}
	}

	reg.reset()
	s.proxy.ResetLog()
	s.Ctr("images", "pull", "--plain-http", "--snapshotter", "flyio", remote)
	secondPull := reg.requests()
	t.Logf("registry requests during the pull with the layer store:\n%s", strings.Join(secondPull, "\n"))

	// (a) The registry served no layer.
	for _, l := range layers {
		if hasBlobRequest(secondPull, l.digest) {
			t.Errorf("the registry was asked for layer %s although the layer store has it", l.digest)
		}
		// ... and the daemon read it from S3 instead.
		if n := s.gets(l.key); n == 0 {
			t.Errorf("no GET of s3://%s/%s: the layer was not filled from S3", s.gw.Bucket, l.key)
		}
	}
	// (b) The daemon filled the layers itself: its own snapshots are
	// named remote/<chain id>. ctr shows containerd's names (chain ids)
	// only, so ask the daemon's snapshots API directly.
	t.Logf("ctr snapshots --snapshotter flyio ls:\n%s", s.Ctr("snapshots", "--snapshotter", "flyio", "ls"))
	remotes := remoteFills(t, s.Cfg.Address)
	if len(remotes) != len(layers) {
		t.Errorf("daemon has %d remote/ snapshots, want one per layer (%d): %v", len(remotes), len(layers), remotes)
	}
	cl = s.Ctr("content", "ls")
	for _, l := range layers {
		if contentHas(cl, l.digest) {
			t.Errorf("layer %s reached the content store on the second pull", l.digest)
		}
	}
	if log := s.DaemonLog(); strings.Contains(log, "from the remote store failed") {
		t.Errorf("the daemon logged failed remote fills:\n%s", tail(log, 40))
	}

	// (c) The image runs.
	got := s.Ctr("run", "--rm", "--snapshotter", "flyio", remote, "layerstore", "/bin/sh", "-c", ociarchive.CheckScript)
	if got != ociarchive.CheckWant {
		t.Errorf("container view of the image filled from S3:\n%s\nwant:\n%s", got, ociarchive.CheckWant)
	}
}

// pushLayers runs push-layers with the daemon's configuration (its [s3]
// and [containerd] sections) and the gateway's credentials.
func (s *s3env) pushLayers(ref string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, s.Bin, "--config", s.CfgPath, "push-layers", ref)
	cmd.Env = append(append(os.Environ(), "PATH="+s.Path), s.gw.Env()...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		err = fmt.Errorf("push-layers %s: %w\n%s", ref, err, out)
	}
	return string(out), err
}

type pushedLayer struct{ digest, diffID, key string }

var pushLine = regexp.MustCompile(`(?m)^(sha256:[0-9a-f]{64}) \S+ \(\d+(?:\.\d)? (?:B|KiB|MiB|GiB|TiB), diff id (sha256:[0-9a-f]{64})\): (uploaded|already there) as s3://[^/]+/(\S+)$`)

// parsePushLayers returns the layers push-layers reported, all of which
// must say what.
func parsePushLayers(t *testing.T, out, what string) []pushedLayer {
	t.Helper()
	var ls []pushedLayer
	for _, m := range pushLine.FindAllStringSubmatch(out, -1) {
		if m[3] != what {
			t.Errorf("layer %s: %s, want %s", m[1], m[3], what)
		}
		ls = append(ls, pushedLayer{digest: m[1], diffID: m[2], key: m[4]})
	}
	if len(ls) == 0 {
		t.Fatalf("no layer lines in push-layers output:\n%s", out)
	}
	return ls
}

// contentHas reports whether `ctr content ls` output lists blob digest
// (its first column: the manifest's gc labels name its layers too).
func contentHas(ls, digest string) bool {
	for _, l := range splitLines(ls) {
		if f := strings.Fields(l); len(f) > 0 && f[0] == digest {
			return true
		}
	}
	return false
}

func hasBlobRequest(reqs []string, digest string) bool {
	for _, r := range reqs {
		if strings.Contains(r, "/blobs/"+digest) {
			return true
		}
	}
	return false
}

// remoteFills lists the daemon's snapshots named remote/... through its
// snapshots API (the names containerd never shows).
func remoteFills(t *testing.T, addr string) []string {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	sn := snproxy.NewSnapshotter(snapshotsapi.NewSnapshotsClient(conn), "flyio")
	var names []string
	err = sn.Walk(context.Background(), func(_ context.Context, info snapshots.Info) error {
		t.Logf("daemon snapshot %s (%s, parent %q)", info.Name, info.Kind, info.Parent)
		if strings.HasPrefix(info.Name, "remote/") {
			if info.Kind != snapshots.KindCommitted {
				t.Errorf("remote fill %s is %s, not committed", info.Name, info.Kind)
			}
			names = append(names, info.Name)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("walking the daemon's snapshots: %v", err)
	}
	return names
}

// recordingProxy is a reverse proxy in front of the registry that records
// every request, so a test can tell which blobs containerd fetched.
type recordingProxy struct {
	addr string // host:port
	mu   sync.Mutex
	log  []string
}

func newRecordingProxy(t *testing.T, target string) *recordingProxy {
	t.Helper()
	u, err := url.Parse("http://" + target)
	if err != nil {
		t.Fatal(err)
	}
	p := &recordingProxy{}
	rp := httputil.NewSingleHostReverseProxy(u)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		p.log = append(p.log, r.Method+" "+r.URL.Path)
		p.mu.Unlock()
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	p.addr = strings.TrimPrefix(srv.URL, "http://")
	return p
}

func (p *recordingProxy) reset() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.log = nil
}

func (p *recordingProxy) requests() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.log...)
}
