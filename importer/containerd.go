package importer

import (
	"context"
	"fmt"
	"sync"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"
)

// Containerd hands out a connected containerd client. The daemon may start
// before containerd does, so the connection is made on first use.
type Containerd interface {
	Client(ctx context.Context) (*client.Client, error)
	Namespace() string
}

// LazyContainerd connects to Address on first use and keeps the client.
type LazyContainerd struct {
	Address string
	NS      string

	mu  sync.Mutex
	cli *client.Client
}

// Client returns the shared client, connecting if needed.
func (l *LazyContainerd) Client(ctx context.Context) (*client.Client, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cli != nil {
		return l.cli, nil
	}
	cli, err := client.New(l.Address, client.WithDefaultNamespace(l.NS))
	if err != nil {
		return nil, fmt.Errorf("connecting to containerd at %s: %w", l.Address, err)
	}
	l.cli = cli
	return cli, nil
}

// Namespace is the containerd namespace images are registered in.
func (l *LazyContainerd) Namespace() string { return l.NS }

// Close drops the connection.
func (l *LazyContainerd) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cli == nil {
		return nil
	}
	err := l.cli.Close()
	l.cli = nil
	return err
}

func withNamespace(ctx context.Context, cd Containerd) context.Context {
	return namespaces.WithNamespace(ctx, cd.Namespace())
}
