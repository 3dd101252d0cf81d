package fleet

import (
	"context"

	"go.uber.org/zap"
)

// Grants across hosts: a grant given or revoked on one host is written to
// clawd_grants with a notification on clawd_grants; every other host then
// loads the fleet's live grants into its approval Manager (SyncGrants):
// a grant made on A applies at once to the container wherever it runs,
// and a revoke on B ends it on A too (A's revocation hooks re-decide what
// it let through). The poll every heartbeat makes up for a lost
// notification.

func (f *Fleet) kickGrants() {
	select {
	case f.grantsC <- struct{}{}:
	default:
	}
}

func (f *Fleet) serveGrants(ctx context.Context) {
	var lastErr string
	for {
		select {
		case <-ctx.Done():
			return
		case <-f.grantsC:
		}
		f.mu.Lock()
		sync, ready := f.grantSync, f.ready
		f.mu.Unlock()
		if sync == nil || !ready || !f.up.Load() {
			continue
		}
		err := sync()
		if s := errString(err); s != lastErr {
			if err != nil {
				f.log.Warn("fleet: loading the fleet's grants", zap.Error(err))
			}
			lastErr = s
		}
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
