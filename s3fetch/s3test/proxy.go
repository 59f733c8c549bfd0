package s3test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// Proxy is a reverse proxy in front of an S3 server that injects faults into
// chosen requests and records every request, so tests can check both that a
// client recovers and how (for example, which Range a resumed GET asked for).
// Point the client's endpoint at Proxy.URL; the Host header is passed through
// unchanged, so SigV4 signatures made for the proxy still verify upstream.
type Proxy struct {
	URL string

	target    string
	srv       *httptest.Server
	transport *http.Transport

	mu    sync.Mutex
	rules []*Rule
	log   []Request
	gated int // requests held at a Fault.Gate now
}

// Request is one request seen by the proxy.
type Request struct {
	Method  string
	Path    string // URL path, "/bucket/key" for path-style requests
	Query   string
	Range   string
	IfMatch string
	Status  int    // upstream status, or the injected one
	Fault   string // what was done to it, "" for nothing
}

// Fault says what to do to a request. Zero fields do nothing; several may
// combine (e.g. Before with ResetAfter).
type Fault struct {
	// Before runs before the request is forwarded, e.g. to replace the
	// object between parts of a download.
	Before func()
	// Status answers the request with this HTTP status and S3 error Code
	// without forwarding it (e.g. 503 "SlowDown", 500 "InternalError").
	Status int
	Code   string
	// StallHeaders waits this long before forwarding, or until the client
	// gives up.
	StallHeaders time.Duration
	// After StallAfterBytes bytes of the body, StallBody waits this long
	// (or until the client gives up) before continuing.
	StallBody       time.Duration
	StallAfterBytes int64
	// ResetAfter > 0 sends that many body bytes, then resets the
	// connection (RST). Use ResetBeforeBody to reset right after headers.
	ResetAfter      int64
	ResetBeforeBody bool
	// TruncateAfter > 0 sends that many body bytes although Content-Length
	// promised more, then closes the connection cleanly (FIN).
	TruncateAfter int64
	// Gate throttles a download to a standstill: after StallAfterBytes
	// bytes of the body the proxy sends nothing more until Gate is closed
	// (or the client gives up), then the rest. Proxy.Gated counts the
	// requests held there, so a test knows the client is mid-download.
	Gate <-chan struct{}
}

// Rule applies a Fault to matching requests.
type Rule struct {
	// Match selects requests; nil matches all.
	Match func(r *http.Request) bool
	// Skip lets this many matching requests through untouched first.
	Skip int
	// Times is how many matching requests get the fault; 0 means all.
	Times int
	Fault Fault

	seen, applied int
}

// Applied reports how many requests the rule has changed.
func (r *Rule) Applied(p *Proxy) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return r.applied
}

// NewProxy starts a proxy to target (e.g. Fake.URL or Server.Endpoint) and
// stops it in t.Cleanup.
func NewProxy(t testing.TB, target string) *Proxy {
	p := &Proxy{
		target: strings.TrimSuffix(target, "/"),
		transport: &http.Transport{
			Proxy:               nil,
			DisableCompression:  true,
			MaxIdleConnsPerHost: 64,
		},
	}
	p.srv = httptest.NewServer(http.HandlerFunc(p.serve))
	p.URL = p.srv.URL
	t.Cleanup(func() {
		p.srv.CloseClientConnections()
		p.srv.Close()
		p.transport.CloseIdleConnections()
	})
	return p
}

// Inject adds a rule; rules are tried in order and the first whose Match,
// Skip and Times admit the request applies.
func (p *Proxy) Inject(r *Rule) *Rule {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rules = append(p.rules, r)
	return r
}

// Gated is how many requests are held at a Fault.Gate right now.
func (p *Proxy) Gated() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.gated
}

// ClearFaults removes all rules.
func (p *Proxy) ClearFaults() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rules = nil
}

// Requests returns the requests seen so far, in arrival order.
func (p *Proxy) Requests() []Request {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]Request(nil), p.log...)
}

// ResetLog forgets the recorded requests.
func (p *Proxy) ResetLog() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.log = nil
}

// GetsOf returns the recorded GET requests for key in bucket.
func (p *Proxy) GetsOf(bucket, key string) []Request {
	var out []Request
	for _, r := range p.Requests() {
		if r.Method == http.MethodGet && r.Path == "/"+bucket+"/"+key {
			out = append(out, r)
		}
	}
	return out
}

// MatchGet matches GETs of key (any bucket).
func MatchGet(key string) func(*http.Request) bool {
	return func(r *http.Request) bool {
		return r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/"+key)
	}
}

// MatchRangeFrom matches GETs of key whose Range starts at byte start.
func MatchRangeFrom(key string, start int64) func(*http.Request) bool {
	prefix := fmt.Sprintf("bytes=%d-", start)
	return func(r *http.Request) bool {
		return MatchGet(key)(r) && strings.HasPrefix(r.Header.Get("Range"), prefix)
	}
}

func (p *Proxy) pick(r *http.Request) (Fault, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, rule := range p.rules {
		if rule.Match != nil && !rule.Match(r) {
			continue
		}
		rule.seen++
		if rule.seen <= rule.Skip || (rule.Times > 0 && rule.applied >= rule.Times) {
			continue
		}
		rule.applied++
		return rule.Fault, true
	}
	return Fault{}, false
}

func (p *Proxy) record(req Request) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.log = append(p.log, req)
}

func (p *Proxy) serve(w http.ResponseWriter, r *http.Request) {
	rec := Request{Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery, Range: r.Header.Get("Range"), IfMatch: r.Header.Get("If-Match")}
	f, faulty := p.pick(r)
	if faulty && f.Before != nil {
		f.Before()
	}
	if faulty && f.Status != 0 {
		rec.Status, rec.Fault = f.Status, fmt.Sprintf("status %d %s", f.Status, f.Code)
		p.record(rec)
		writeError(w, f.Status, f.Code, "injected by s3test.Proxy")
		return
	}
	if faulty && f.StallHeaders > 0 {
		rec.Fault = "stall headers " + f.StallHeaders.String()
		if !wait(r, f.StallHeaders) {
			rec.Status = -1
			p.record(rec)
			return
		}
	}
	out, err := http.NewRequestWithContext(r.Context(), r.Method, p.target+r.URL.RequestURI(), r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	out.Header = r.Header.Clone()
	out.Host = r.Host
	out.ContentLength = r.ContentLength
	if r.ContentLength == 0 {
		out.Body = nil
	}
	resp, err := p.transport.RoundTrip(out)
	if err != nil {
		rec.Status = http.StatusBadGateway
		p.record(rec)
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	rec.Status = resp.StatusCode
	for k, v := range resp.Header {
		w.Header()[k] = v
	}
	w.WriteHeader(resp.StatusCode)
	switch {
	case faulty && f.ResetBeforeBody:
		rec.Fault = "reset before body"
		p.record(rec)
		hangUp(w, true)
	case faulty && f.ResetAfter > 0:
		rec.Fault = fmt.Sprintf("reset after %d bytes", f.ResetAfter)
		p.record(rec)
		io.CopyN(w, resp.Body, f.ResetAfter)
		hangUp(w, true)
	case faulty && f.TruncateAfter > 0:
		rec.Fault = fmt.Sprintf("truncate after %d bytes", f.TruncateAfter)
		p.record(rec)
		io.CopyN(w, resp.Body, f.TruncateAfter)
		hangUp(w, false)
	case faulty && f.Gate != nil:
		rec.Fault = fmt.Sprintf("gate after %d bytes", f.StallAfterBytes)
		p.record(rec)
		io.CopyN(w, resp.Body, f.StallAfterBytes)
		w.(http.Flusher).Flush()
		p.mu.Lock()
		p.gated++
		p.mu.Unlock()
		select {
		case <-f.Gate:
		case <-r.Context().Done():
		}
		p.mu.Lock()
		p.gated--
		p.mu.Unlock()
		if r.Context().Err() == nil {
			io.Copy(w, resp.Body)
		}
	case faulty && f.StallBody > 0:
		rec.Fault = fmt.Sprintf("stall %v after %d bytes", f.StallBody, f.StallAfterBytes)
		p.record(rec)
		io.CopyN(w, resp.Body, f.StallAfterBytes)
		w.(http.Flusher).Flush()
		if wait(r, f.StallBody) {
			io.Copy(w, resp.Body)
		}
	default:
		p.record(rec)
		io.Copy(w, resp.Body)
	}
}

// wait sleeps d unless the client goes away first; it reports whether the
// full time passed.
func wait(r *http.Request, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-r.Context().Done():
		return false
	}
}

// hangUp flushes what was written and drops the connection, with a TCP RST
// when reset is set (SO_LINGER 0) or a normal close otherwise.
func hangUp(w http.ResponseWriter, reset bool) {
	w.(http.Flusher).Flush()
	conn, buf, err := w.(http.Hijacker).Hijack()
	if err != nil {
		return
	}
	buf.Flush()
	if tc, ok := conn.(*net.TCPConn); ok && reset {
		tc.SetLinger(0)
	}
	conn.Close()
}
