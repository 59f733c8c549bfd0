package s3fetch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// pending is a ranged GET whose headers have arrived and whose body is being
// read under its own attempt context and stall timer.
type pending struct {
	out    *s3.GetObjectOutput
	start  int64 // first byte requested
	ctx    context.Context
	cancel context.CancelCauseFunc
	stall  *time.Timer
}

func (p *pending) close() {
	p.stall.Stop()
	p.out.Body.Close()
	p.cancel(nil)
}

func (p *pending) etag() string { return aws.ToString(p.out.ETag) }

// request issues one ranged GET for [start, end) — one attempt, the SDK's
// retryer disabled so that retries resume from the failed offset here.
// etag, when set, pins the request to that version of the object.
func (o *Object) request(start, end int64, etag string) (*pending, error) {
	actx, cancel := context.WithCancelCause(o.ctx)
	stall := newStallTimer(o.c.cfg.PartTimeout.Duration(), cancel)
	in := &s3.GetObjectInput{
		Bucket: &o.c.cfg.Bucket,
		Key:    &o.Key,
		Range:  aws.String(fmt.Sprintf("bytes=%d-%d", start, end-1)),
	}
	if etag != "" {
		in.IfMatch = &etag
	}
	out, err := o.c.s3.GetObject(actx, in, func(so *s3.Options) { so.Retryer = aws.NopRetryer{} })
	if err != nil {
		stall.Stop()
		if context.Cause(actx) == errStalled && o.ctx.Err() == nil {
			err = fmt.Errorf("%w (waiting for response headers): %w", errStalled, err)
		}
		cancel(nil)
		return nil, err
	}
	p := &pending{out: out, start: start, ctx: actx, cancel: cancel, stall: stall}
	if err := p.check(o, etag); err != nil {
		p.close()
		return nil, err
	}
	return p, nil
}

// check refuses a response that is not the bytes asked for: a server that
// ignored Range, or ignored If-Match and sent another version.
func (p *pending) check(o *Object, etag string) error {
	if etag != "" && p.etag() != "" && p.etag() != etag {
		return o.changed(etag, p.etag())
	}
	cr := aws.ToString(p.out.ContentRange)
	if cr == "" {
		if p.start != 0 {
			return o.corrupt(fmt.Sprintf("no Content-Range in answer to a request from byte %d", p.start))
		}
		return nil
	}
	first, _, _, err := parseContentRange(cr)
	if err != nil {
		return o.corrupt(err.Error())
	}
	if first != p.start {
		return o.corrupt(fmt.Sprintf("asked for bytes from %d, got Content-Range %q", p.start, cr))
	}
	return nil
}

// totalSize is the object size from the first response.
func (p *pending) totalSize(o *Object) (int64, error) {
	if cr := aws.ToString(p.out.ContentRange); cr != "" {
		_, _, total, err := parseContentRange(cr)
		if err != nil {
			return 0, o.corrupt(err.Error())
		}
		return total, nil
	}
	// 200 OK without a range: the whole object.
	if p.out.ContentLength == nil {
		return 0, o.corrupt("neither Content-Range nor Content-Length in response")
	}
	return *p.out.ContentLength, nil
}

// parseContentRange parses "bytes FIRST-LAST/TOTAL".
func parseContentRange(s string) (first, last, total int64, err error) {
	bad := fmt.Errorf("malformed Content-Range %q", s)
	rest, ok := strings.CutPrefix(s, "bytes ")
	if !ok {
		return 0, 0, 0, bad
	}
	rng, tot, ok := strings.Cut(rest, "/")
	if !ok {
		return 0, 0, 0, bad
	}
	a, b, ok := strings.Cut(rng, "-")
	if !ok {
		return 0, 0, 0, bad
	}
	if first, err = strconv.ParseInt(a, 10, 64); err != nil {
		return 0, 0, 0, bad
	}
	if last, err = strconv.ParseInt(b, 10, 64); err != nil {
		return 0, 0, 0, bad
	}
	if total, err = strconv.ParseInt(tot, 10, 64); err != nil || first > last || last >= total {
		return 0, 0, 0, bad
	}
	return first, last, total, nil
}

// fetchPart fills p.buf with the part's bytes. A failed attempt is resumed
// from the first byte not yet received, with exponential backoff, up to
// MaxRetries times per part.
func (o *Object) fetchPart(p *part) error {
	buf := (*p.buf)[:p.len()]
	var got int64
	for attempt := 0; ; attempt++ {
		var resp *pending
		if p.idx == 0 {
			resp = o.first.Swap(nil)
		}
		n, err := o.attempt(p, buf, got, resp)
		got += n
		if err == nil {
			return nil
		}
		if o.ctx.Err() != nil {
			return context.Cause(o.ctx)
		}
		if !retryable(err) || attempt >= o.c.cfg.MaxRetries {
			if e := translate("GetObject", o.c.cfg.Bucket, o.Key, err); e != err {
				err = e
			}
			var se *Error
			if errors.As(err, &se) && se.Kind == nil {
				se.Msg = fmt.Sprintf("S3 GetObject %s bytes %d-%d failed after %d attempts", objectURL(o.c.cfg.Bucket, o.Key), p.start+got, p.end-1, attempt+1)
			}
			return err
		}
		o.retries.Add(1)
		if err := sleep(o.ctx, o.c.backoff(attempt+1)); err != nil {
			return context.Cause(o.ctx)
		}
	}
}

// attempt reads buf[got:] from resp, or from a new ranged GET starting at
// the first missing byte, and returns how many bytes it added.
func (o *Object) attempt(p *part, buf []byte, got int64, resp *pending) (int64, error) {
	if resp == nil {
		var err error
		if resp, err = o.request(p.start+got, p.end, o.ETag); err != nil {
			return 0, err
		}
	}
	defer resp.close()
	want := int64(len(buf)) - got
	if cl := aws.ToInt64(resp.out.ContentLength); resp.out.ContentLength != nil && cl < want {
		// A ranged answer shorter than the range asked for, within an
		// object known to be long enough, is a broken response.
		return 0, o.corrupt(fmt.Sprintf("asked for %d bytes from %d, Content-Length is %d", want, p.start+got, cl))
	}
	var n int64
	for n < want {
		resp.stall.Reset(o.c.cfg.PartTimeout.Duration())
		m, err := resp.out.Body.Read(buf[got+n:])
		n += int64(m)
		if n >= want {
			break
		}
		if err == io.EOF {
			return n, fmt.Errorf("%w: got %d of %d bytes from offset %d: %w", errShortBody, n, want, p.start+got, io.ErrUnexpectedEOF)
		}
		if err != nil {
			if context.Cause(resp.ctx) == errStalled && o.ctx.Err() == nil {
				return n, fmt.Errorf("%w after %d of %d bytes from offset %d", errStalled, n, want, p.start+got)
			}
			return n, err
		}
	}
	return n, nil
}

func (o *Object) corrupt(msg string) error {
	return &Error{Op: "GetObject", Bucket: o.c.cfg.Bucket, Key: o.Key, Kind: ErrCorrupt,
		Msg: fmt.Sprintf("S3 GetObject %s: %s", objectURL(o.c.cfg.Bucket, o.Key), msg)}
}

func (o *Object) changed(want, got string) error {
	return &Error{Op: "GetObject", Bucket: o.c.cfg.Bucket, Key: o.Key, Kind: ErrObjectChanged,
		Msg: fmt.Sprintf("object %s changed during download (ETag %s, now %s); refusing to mix versions", objectURL(o.c.cfg.Bucket, o.Key), want, got)}
}
