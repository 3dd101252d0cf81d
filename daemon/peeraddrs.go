package daemon

import (
	"context"
	"fmt"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/clawd-dev/clawd/daemon/runtime"
)

// Every container the runtimes run, attached or not, is "another
// container" to an agent: its addresses join the container-address
// registry (keyed "rt:" + attachment ID, beside the attachments' own
// entries) when its task is created and at every sweep, and leave it when
// the task exits or the runtime no longer lists it.

const peerPrefix = "rt:"

// notePeer records the addresses of a runtime container's network
// namespace.
func (d *Daemon) notePeer(c runtime.Container) {
	if c.PID == 0 {
		return
	}
	addrs, err := netnsAddrs(fmt.Sprintf("/proc/%d/ns/net", c.PID))
	if err != nil {
		d.log.Debug("runtime container addresses", zap.String("container", c.Name), zap.Error(err))
		return
	}
	d.addrs.set(peerPrefix+attachmentID(c.Container), addrs)
}

// forgetPeer drops a runtime container whose task exited.
func (d *Daemon) forgetPeer(c runtime.Container) {
	d.addrs.remove(peerPrefix + attachmentID(c.Container))
}

// refreshPeers re-reads every runtime container's addresses and drops the
// ones the runtimes no longer list.
func (d *Daemon) refreshPeers() {
	if len(d.rt) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(d.ctx, 10*time.Second)
	defer cancel()
	cs, err := d.rt.List(ctx)
	if err != nil {
		d.log.Debug("list runtime containers", zap.Error(err))
		return // keep what is known: never forget on an error
	}
	live := map[string]bool{}
	for _, c := range cs {
		if c.PID != 0 {
			live[peerPrefix+attachmentID(c.Container)] = true
			d.notePeer(c)
		}
	}
	for _, id := range d.addrs.ids() {
		if strings.HasPrefix(id, peerPrefix) && !live[id] {
			d.addrs.remove(id)
		}
	}
}
