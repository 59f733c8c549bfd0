package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"golang.org/x/sys/unix"

	"github.com/superfly/flyio-image-manager/extract"
	"github.com/superfly/flyio-image-manager/s3fetch"
)

// childArgs is what the parent hands a measuring child, as JSON in argv.
type childArgs struct {
	Mode      string     // "stream" or "download"
	S3        wireConfig // endpoint, bucket, part size...
	AccessKey string
	SecretKey string
	Key       string
	Root      string // mounted thin device to extract into
	File      string // "download": where the object is saved first
}

// wireConfig is an s3fetch.Config that survives JSON: units.Seconds
// reads only text, but encodes as a number, so its fields travel as
// plain float seconds (these shallower fields hide the embedded ones).
type wireConfig struct {
	s3fetch.Config
	DownloadTimeout, PartTimeout, RetryBaseDelay, RetryMaxDelay float64
}

func toWire(c s3fetch.Config) wireConfig {
	return wireConfig{Config: c, DownloadTimeout: float64(c.DownloadTimeout), PartTimeout: float64(c.PartTimeout),
		RetryBaseDelay: float64(c.RetryBaseDelay), RetryMaxDelay: float64(c.RetryMaxDelay)}
}

func (w wireConfig) config() s3fetch.Config {
	c := w.Config
	c.DownloadTimeout, c.PartTimeout = s3fetch.Seconds(w.DownloadTimeout), s3fetch.Seconds(w.PartTimeout)
	c.RetryBaseDelay, c.RetryMaxDelay = s3fetch.Seconds(w.RetryBaseDelay), s3fetch.Seconds(w.RetryMaxDelay)
	return c
}

// childResult is what a child prints on stdout.
type childResult struct {
	Total    time.Duration // whole fill, syncfs included
	Download time.Duration // "download": the GET to a file
	Bytes    int64         // uncompressed tar stream
	Entries  int
	MaxRSS   int64 // VmHWM, bytes
}

// runChild is the body of `s3bench child ARGS`: one fill, measured in its
// own process so its peak RSS is its own.
func runChild(arg string) error {
	var a childArgs
	if err := json.Unmarshal([]byte(arg), &a); err != nil {
		return err
	}
	ctx := context.Background()
	creds := credentials.NewStaticCredentialsProvider(a.AccessKey, a.SecretKey, "")
	cl, err := s3fetch.New(ctx, a.S3.config(), s3fetch.WithCredentials(creds))
	if err != nil {
		return err
	}
	var res childResult
	start := time.Now()
	var er extract.Result
	switch a.Mode {
	case "stream":
		// Our path: ranged GETs feed the extractor as they arrive.
		obj, err := cl.Open(ctx, a.Key)
		if err != nil {
			return err
		}
		er, err = extract.Extract(ctx, obj, a.Root, extract.Options{Mode: extract.Rootfs})
		obj.Close()
		if err != nil {
			return err
		}
	case "download":
		// Baseline: one GET of the whole object to a file, then extract it.
		out, err := cl.S3().GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(a.S3.Bucket), Key: aws.String(a.Key)})
		if err != nil {
			return err
		}
		f, err := os.Create(a.File)
		if err != nil {
			return err
		}
		_, err = io.Copy(f, out.Body)
		out.Body.Close()
		if err != nil {
			f.Close()
			return err
		}
		res.Download = time.Since(start)
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return err
		}
		er, err = extract.Extract(ctx, bufio.NewReaderSize(f, 1<<20), a.Root, extract.Options{Mode: extract.Rootfs})
		f.Close()
		os.Remove(a.File)
		if err != nil {
			return err
		}
	default:
		return fmt.Errorf("unknown child mode %q", a.Mode)
	}
	// A fill is done when it is on the device, not in the page cache.
	if err := syncfs(a.Root); err != nil {
		return err
	}
	res.Total = time.Since(start)
	res.Bytes, res.Entries = er.Bytes, er.Entries
	res.MaxRSS, err = vmHWM()
	if err != nil {
		return err
	}
	return json.NewEncoder(os.Stdout).Encode(res)
}

func syncfs(dir string) error {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return unix.Syncfs(fd)
}

// vmHWM is this process's peak resident set size.
func vmHWM() (int64, error) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no VmHWM in /proc/self/status")
}
