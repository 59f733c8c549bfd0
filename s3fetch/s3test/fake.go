// Package s3test provides S3 servers for tests: an in-process fake for fast
// unit tests, a real versitygw gateway (Start), and a fault-injecting proxy
// to put in front of either.
package s3test

import (
	"crypto/md5"
	"encoding/hex"
	"encoding/xml"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Fake is a minimal in-process S3 server: one bucket, path-style requests,
// GetObject with Range and If-Match, HeadObject, PutObject (single part) and
// ListObjectsV2. It ignores signatures. Use it for fast tests of client
// logic; use Start for the real protocol.
type Fake struct {
	URL    string
	Bucket string
	// ListPageSize caps keys per ListObjectsV2 page so tests can exercise
	// pagination.
	ListPageSize int

	srv     *httptest.Server
	mu      sync.Mutex
	objects map[string]fakeObject
	denied  map[string]bool
}

type fakeObject struct {
	data    []byte
	etag    string
	modTime time.Time
}

// NewFake starts a fake serving bucket and closes it in t.Cleanup.
func NewFake(t testing.TB, bucket string) *Fake {
	f := &Fake{Bucket: bucket, ListPageSize: 1000, objects: map[string]fakeObject{}, denied: map[string]bool{}}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	f.URL = f.srv.URL
	t.Cleanup(f.srv.Close)
	return f
}

// Put stores data under key, replacing any previous version, and returns the
// new ETag (quoted, like S3's).
func (f *Fake) Put(key string, data []byte) string {
	sum := md5.Sum(data)
	etag := `"` + hex.EncodeToString(sum[:]) + `"`
	f.mu.Lock()
	defer f.mu.Unlock()
	f.objects[key] = fakeObject{data: append([]byte(nil), data...), etag: etag, modTime: time.Now().UTC().Truncate(time.Second)}
	return etag
}

// Get returns the stored bytes of key.
func (f *Fake) Get(key string) ([]byte, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	o, ok := f.objects[key]
	return o.data, ok
}

// Deny makes every request for key fail with 403 AccessDenied.
func (f *Fake) Deny(key string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.denied[key] = true
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/xml")
	w.WriteHeader(status)
	fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>%s</Code><Message>%s</Message></Error>`, code, msg)
}

func (f *Fake) serve(w http.ResponseWriter, r *http.Request) {
	bucket, key, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
	if bucket != f.Bucket {
		if r.Method == http.MethodHead {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		writeError(w, http.StatusNotFound, "NoSuchBucket", "The specified bucket does not exist")
		return
	}
	f.mu.Lock()
	denied := f.denied[key]
	f.mu.Unlock()
	if denied {
		if r.Method == http.MethodHead {
			w.WriteHeader(http.StatusForbidden)
			return
		}
		writeError(w, http.StatusForbidden, "AccessDenied", "Access Denied")
		return
	}
	switch {
	case key == "" && r.Method == http.MethodGet:
		f.list(w, r)
	case r.Method == http.MethodGet || r.Method == http.MethodHead:
		f.get(w, r, key)
	case r.Method == http.MethodPut:
		data, err := io.ReadAll(r.Body)
		if err != nil {
			writeError(w, http.StatusBadRequest, "IncompleteBody", err.Error())
			return
		}
		w.Header().Set("ETag", f.Put(key, data))
		w.WriteHeader(http.StatusOK)
	default:
		writeError(w, http.StatusNotImplemented, "NotImplemented", r.Method+" not supported by s3test.Fake")
	}
}

func (f *Fake) get(w http.ResponseWriter, r *http.Request, key string) {
	f.mu.Lock()
	o, ok := f.objects[key]
	f.mu.Unlock()
	head := r.Method == http.MethodHead
	if !ok {
		if head {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		writeError(w, http.StatusNotFound, "NoSuchKey", "The specified key does not exist.")
		return
	}
	if im := r.Header.Get("If-Match"); im != "" && im != o.etag {
		writeError(w, http.StatusPreconditionFailed, "PreconditionFailed", "At least one of the pre-conditions you specified did not hold")
		return
	}
	h := w.Header()
	h.Set("ETag", o.etag)
	h.Set("Last-Modified", o.modTime.Format(http.TimeFormat))
	h.Set("Accept-Ranges", "bytes")
	size := int64(len(o.data))
	rng := r.Header.Get("Range")
	if rng == "" || head {
		h.Set("Content-Length", strconv.FormatInt(size, 10))
		w.WriteHeader(http.StatusOK)
		if !head {
			w.Write(o.data)
		}
		return
	}
	start, end, ok := parseRange(rng, size)
	if !ok {
		writeError(w, http.StatusRequestedRangeNotSatisfiable, "InvalidRange", "The requested range is not satisfiable")
		return
	}
	h.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, end-1, size))
	h.Set("Content-Length", strconv.FormatInt(end-start, 10))
	w.WriteHeader(http.StatusPartialContent)
	w.Write(o.data[start:end])
}

// parseRange handles "bytes=a-b" and "bytes=a-", returning [start, end).
func parseRange(s string, size int64) (start, end int64, ok bool) {
	spec, found := strings.CutPrefix(s, "bytes=")
	if !found {
		return 0, 0, false
	}
	a, b, found := strings.Cut(spec, "-")
	if !found {
		return 0, 0, false
	}
	start, err := strconv.ParseInt(a, 10, 64)
	if err != nil || start >= size {
		return 0, 0, false
	}
	end = size
	if b != "" {
		last, err := strconv.ParseInt(b, 10, 64)
		if err != nil || last < start {
			return 0, 0, false
		}
		end = min(last+1, size)
	}
	return start, end, true
}

type listResult struct {
	XMLName               xml.Name `xml:"http://s3.amazonaws.com/doc/2006-03-01/ ListBucketResult"`
	Name                  string
	Prefix                string
	KeyCount              int
	MaxKeys               int
	IsTruncated           bool
	NextContinuationToken string `xml:",omitempty"`
	Contents              []listEntry
}

type listEntry struct {
	Key          string
	LastModified string
	ETag         string
	Size         int64
}

func (f *Fake) list(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	prefix, after := q.Get("prefix"), q.Get("continuation-token")
	pageSize := f.ListPageSize
	if mk, err := strconv.Atoi(q.Get("max-keys")); err == nil && mk > 0 && mk < pageSize {
		pageSize = mk
	}
	f.mu.Lock()
	var keys []string
	for k := range f.objects {
		if strings.HasPrefix(k, prefix) && k > after {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	res := listResult{Name: f.Bucket, Prefix: prefix, MaxKeys: pageSize}
	if len(keys) > pageSize {
		keys = keys[:pageSize]
		res.IsTruncated = true
		res.NextContinuationToken = keys[len(keys)-1]
	}
	for _, k := range keys {
		o := f.objects[k]
		res.Contents = append(res.Contents, listEntry{Key: k, LastModified: o.modTime.Format(time.RFC3339), ETag: o.etag, Size: int64(len(o.data))})
	}
	f.mu.Unlock()
	res.KeyCount = len(res.Contents)
	w.Header().Set("Content-Type", "application/xml")
	w.Write([]byte(xml.Header))
	xml.NewEncoder(w).Encode(res)
}
