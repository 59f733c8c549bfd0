package harness

import (
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// Proc is a background process of a test (our daemon, containerd, a
// registry) whose output goes to a log file.
type Proc struct {
	Name string
	Cmd  *exec.Cmd
	Log  string

	exited chan struct{}
	err    error // cmd.Wait's result, once exited is closed
}

// StartProc starts cmd with PATH=path plus extraEnv, its output in log.
// The process is killed if the test binary dies.
func StartProc(t testing.TB, name, log, path string, cmd *exec.Cmd, extraEnv ...string) *Proc {
	t.Helper()
	p := &Proc{Name: name, Cmd: cmd, Log: log, exited: make(chan struct{})}
	f, err := os.Create(log)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(append(os.Environ(), "PATH="+path), extraEnv...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		t.Fatalf("start %s: %v", name, err)
	}
	go func() { p.err = cmd.Wait(); f.Close(); close(p.exited) }()
	return p
}

// Exited reports, without blocking, whether the process has exited.
func (p *Proc) Exited() bool {
	select {
	case <-p.exited:
		return true
	default:
		return false
	}
}

// Wait waits up to timeout for the process to exit and returns its exit
// error; ok is false if it is still running.
func (p *Proc) Wait(timeout time.Duration) (err error, ok bool) {
	select {
	case <-p.exited:
		return p.err, true
	case <-time.After(timeout):
		return nil, false
	}
}

// Kill sends SIGKILL, waits, and returns the exit error.
func (p *Proc) Kill() error {
	_ = p.Cmd.Process.Kill()
	<-p.exited
	return p.err
}

// WaitFor polls ready until it holds, failing the test when timeout
// passes or the process exits first (with the tail of its log).
func (p *Proc) WaitFor(t testing.TB, what string, timeout time.Duration, ready func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !ready() {
		if p.Exited() {
			b, _ := os.ReadFile(p.Log)
			t.Fatalf("%s exited (%v) while waiting for %s:\n%s", p.Name, p.err, what, Tail(string(b), 40))
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready after %s", what, timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Stop sends SIGTERM and waits up to 45 s, then SIGKILL; a non-zero exit
// fails the test. Nil is a no-op.
func (p *Proc) Stop(t testing.TB) {
	t.Helper()
	if p == nil {
		return
	}
	_ = p.Cmd.Process.Signal(syscall.SIGTERM)
	if err, ok := p.Wait(45 * time.Second); ok {
		if err != nil {
			t.Errorf("%s exited with %v after SIGTERM", p.Name, err)
		}
		return
	}
	t.Errorf("%s did not stop within 45s of SIGTERM; killing it", p.Name)
	p.Kill()
}
