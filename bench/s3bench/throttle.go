package main

import (
	"io"
	"net"
	"time"
)

// throttle is a TCP proxy in front of the gateway that caps each
// connection's download rate. A local gateway serves a GET as fast as the
// disk reads, so fetching is almost free there; S3 gives one connection a
// bounded rate and scales with parallel connections, which is what ranged
// GETs exploit. The cap models that.
type throttle struct {
	l        net.Listener
	upstream string
	rate     float64 // bytes per second per connection
}

func startThrottle(upstream string, rate float64) (*throttle, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	t := &throttle{l: l, upstream: upstream, rate: rate}
	go t.serve()
	return t, nil
}

func (t *throttle) addr() string { return t.l.Addr().String() }

func (t *throttle) close() { t.l.Close() }

func (t *throttle) serve() {
	for {
		c, err := t.l.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			u, err := net.Dial("tcp", t.upstream)
			if err != nil {
				return
			}
			defer u.Close()
			go func() { io.Copy(u, c); u.(*net.TCPConn).CloseWrite() }()
			t.copyLimited(c, u)
		}()
	}
}

// copyLimited copies src to dst at no more than t.rate bytes per second.
func (t *throttle) copyLimited(dst io.Writer, src io.Reader) {
	buf := make([]byte, 64<<10)
	start := time.Now()
	var sent float64
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
			sent += float64(n)
			if ahead := time.Duration(sent/t.rate*float64(time.Second)) - time.Since(start); ahead > 0 {
				time.Sleep(ahead)
			}
		}
		if err != nil {
			return
		}
	}
}
