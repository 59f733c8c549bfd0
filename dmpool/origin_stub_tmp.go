package dmpool

import "context"

// TEMPORARY until branch dmorigin lands.
func (p *Pool) ActivateWithOrigin(ctx context.Context, name string, id uint32, size uint64, origin string) (string, error) {
	return p.Activate(ctx, name, id, size)
}
func (p *Pool) ReloadOrigin(ctx context.Context, name string, origin string) error { return nil }
