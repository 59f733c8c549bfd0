package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"

	"github.com/containerd/errdefs"
)

// ErrDaemonNotRunning means nothing answers on the admin socket.
var ErrDaemonNotRunning = errors.New("flyio-image-manager daemon is not running")

// notRunningError is ErrDaemonNotRunning (and errdefs.ErrUnavailable) for
// one socket, with what to do about it.
type notRunningError struct{ path string }

func (e *notRunningError) Error() string {
	return fmt.Sprintf("%v: nothing answers on its admin socket %s. Start it with 'systemctl start flyio-image-manager' "+
		"('systemctl status flyio-image-manager' and 'journalctl -u flyio-image-manager' say why it stopped), "+
		"or run 'flyio-image-manager daemon' in the foreground; a daemon started with another config file needs the same --config here",
		ErrDaemonNotRunning, e.path)
}

func (e *notRunningError) Unwrap() []error {
	return []error{ErrDaemonNotRunning, errdefs.ErrUnavailable}
}

// Client talks to a daemon's admin socket.
type Client struct {
	path string
	http *http.Client
}

// NewClient returns a client of the admin socket at path.
func NewClient(path string) *Client {
	return &Client{path: path, http: &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
	}}}
}

func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	resp, err := c.send(ctx, method, path, in)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		return nil
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// send makes a request with in as its JSON body and returns a successful
// response for the caller to read and close; a daemon error comes back
// as an error of its errdefs kind.
func (c *Client) send(ctx context.Context, method, path string, in any) (*http.Response, error) {
	var body bytes.Buffer
	if in != nil {
		if err := json.NewEncoder(&body).Encode(in); err != nil {
			return nil, err
		}
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://flyio-image-manager"+path, &body)
	if err != nil {
		return nil, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		var op *net.OpError
		if errors.As(err, &op) && (errors.Is(err, os.ErrNotExist) || isConnRefused(err)) {
			return nil, &notRunningError{path: c.path}
		}
		if errors.As(err, &op) && errors.Is(err, os.ErrPermission) {
			return nil, &remoteError{msg: fmt.Sprintf("admin socket %s: permission denied: it is root's (mode 0600); run the command as root, e.g. with sudo", c.path), kind: errdefs.ErrPermissionDenied}
		}
		return nil, fmt.Errorf("admin socket %s: %w", c.path, err)
	}
	if resp.StatusCode >= 300 {
		defer resp.Body.Close()
		var e errorBody
		json.NewDecoder(resp.Body).Decode(&e)
		for _, k := range kinds {
			if k.name == e.Kind {
				// The daemon's message ends with the kind's text
				// (": failed precondition"), which says nothing to an
				// operator; the kind still travels in the error.
				return nil, &remoteError{msg: strings.TrimSuffix(e.Error, ": "+k.err.Error()), kind: k.err}
			}
		}
		return nil, errors.New(e.Error)
	}
	return resp, nil
}

// ProcessImage asks the daemon to import an S3 tarball.
func (c *Client) ProcessImage(ctx context.Context, req ProcessImageRequest) (Run, error) {
	var run Run
	err := c.do(ctx, http.MethodPost, "/v1/process-image", req, &run)
	return run, err
}

// Run returns a process-image run.
func (c *Client) Run(ctx context.Context, id string) (Run, error) {
	var run Run
	err := c.do(ctx, http.MethodGet, "/v1/runs/"+url.PathEscape(id), nil, &run)
	return run, err
}

// Runs lists the process-image runs.
func (c *Client) Runs(ctx context.Context) ([]Run, error) {
	var runs []Run
	err := c.do(ctx, http.MethodGet, "/v1/runs", nil, &runs)
	return runs, err
}

// Cancel asks the daemon to stop a queued or running run; it answers
// once the run has cleaned up, with its final record.
func (c *Client) Cancel(ctx context.Context, id string) (Run, error) {
	var run Run
	err := c.do(ctx, http.MethodPost, "/v1/runs/"+url.PathEscape(id)+"/cancel", nil, &run)
	return run, err
}

// Queues returns the downloads and unpacks queues.
func (c *Client) Queues(ctx context.Context) ([]QueueInfo, error) {
	var qs []QueueInfo
	err := c.do(ctx, http.MethodGet, "/v1/queues", nil, &qs)
	return qs, err
}

// Status returns the daemon's view of the pool and its records.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var st Status
	err := c.do(ctx, http.MethodGet, "/v1/status", nil, &st)
	return st, err
}

// GC runs gc in the daemon (dry run or not) and returns its report.
func (c *Client) GC(ctx context.Context, req GCRequest) (GCReport, error) {
	var rep GCReport
	err := c.do(ctx, http.MethodPost, "/v1/gc", req, &rep)
	return rep, err
}

// DeleteImage asks the daemon to delete an imported image and its base.
func (c *Client) DeleteImage(ctx context.Context, id string) (DeleteImageResult, error) {
	var res DeleteImageResult
	err := c.do(ctx, http.MethodDelete, "/v1/images/"+url.PathEscape(id), nil, &res)
	return res, err
}

// PublishBase asks the daemon to publish an imported image's base as a
// block image.
func (c *Client) PublishBase(ctx context.Context, id string) (PublishBaseResult, error) {
	var res PublishBaseResult
	err := c.do(ctx, http.MethodPost, "/v1/images/"+url.PathEscape(id)+"/publish-base", nil, &res)
	return res, err
}

// remoteError is a daemon error: its message as the daemon wrote it, and
// the errdefs kind it had there.
type remoteError struct {
	msg  string
	kind error
}

func (e *remoteError) Error() string { return e.msg }
func (e *remoteError) Unwrap() error { return e.kind }
