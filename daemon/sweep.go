package daemon

import (
	"time"

	"go.uber.org/zap"
)

// sweepLoop is the backstop for missed exit events and link events.
func (d *Daemon) sweepLoop() {
	if d.cfg.SweepInterval <= 0 {
		return
	}
	t := time.NewTicker(d.cfg.SweepInterval)
	defer t.Stop()
	for {
		select {
		case <-d.ctx.Done():
			return
		case <-t.C:
			d.Sweep()
		}
	}
}

// Sweep refreshes the runtime containers' addresses, detaches attachments
// whose cgroup is gone (never because a process exited: the cgroup is the
// container), re-reads the attachments' addresses, covers interfaces the
// link watcher missed, re-checks what cannot be covered, and retries
// re-adoptions in doubt. An error reading a cgroup is doubt, not "gone":
// the attachment stays.
func (d *Daemon) Sweep() {
	d.refreshPeers()
	d.refreshFast("sweep")
	d.mu.Lock()
	var all []*attachment
	for _, a := range d.atts {
		all = append(all, a)
	}
	d.mu.Unlock()
	for _, a := range all {
		gone, err := cgroupGone(a.Cgroup, a.CgroupID)
		if err != nil {
			d.log.Warn("sweep: cannot read the cgroup, keeping the attachment", zap.String("container", a.Container.Name), zap.Error(err))
			continue
		}
		if gone {
			if err := d.detach(a.ID, "container gone (sweep)"); err != nil {
				d.log.Warn("sweep detach", zap.String("id", a.ID), zap.Error(err))
			}
			continue
		}
		// Addresses added or removed since are known.
		d.refreshAddrs(a)
		d.refreshCoverage(a, "sweep")
	}
	d.retryDoubt()
}
