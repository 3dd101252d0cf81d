package daemon

import (
	"os"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/clawd-dev/clawd/daemon/enforce"
)

// Interfaces added to an attached container's netns after attach are
// covered as soon as the kernel announces them: clawd subscribes to link
// events inside that netns and covers every new or changed interface at
// once, with programs it keeps loaded (one bpf() call per hook, no verifier
// run). Until then the new interface's frames are not dropped; the window
// is the event's delivery plus that attach, and at the latest the next
// sweep, which covers whatever the events missed. An interface whose far
// side is in the container's own netns (a macvlan, VLAN or veth pair an
// agent builds on eth0) has no window at all: what it sends leaves through
// an interface that already drops everything.

// track records the attachment's open netns, registers its addresses and
// starts watching its links.
func (d *Daemon) track(id string, ns *os.File) {
	d.mu.Lock()
	a := d.atts[id]
	if a == nil {
		d.mu.Unlock()
		ns.Close()
		return
	}
	a.netns = ns
	stop := make(chan struct{})
	a.stopWatch = func() { close(stop) }
	d.mu.Unlock()
	d.refreshAddrs(a)
	go d.watchLinks(a, stop)
}

// untrack stops the watcher and releases the netns (on detach).
func (d *Daemon) untrack(a *attachment) {
	d.mu.Lock()
	stop, ns := a.stopWatch, a.netns
	a.stopWatch, a.netns = nil, nil
	frozen := a.cutOff != ""
	a.cutOff = ""
	d.mu.Unlock()
	if stop != nil {
		stop()
	}
	if ns != nil {
		ns.Close()
	}
	if frozen {
		// clawd froze it: a detached container is the operator's again.
		os.WriteFile(a.Cgroup+"/cgroup.freeze", []byte("0"), 0)
	}
}

// params are the enforce parameters of a live attachment.
func (d *Daemon) params(a *attachment) enforce.Params {
	d.mu.Lock()
	defer d.mu.Unlock()
	p := enforce.Params{ID: a.ID, Cgroup: a.Cgroup, FastPath: d.cfg.FastPath}
	if a.netns != nil {
		p.Netns = fdPath(a.netns)
	}
	if a.ls != nil {
		p.ProxyPort, p.DNSPort, p.HasV6 = a.ls.tcpPort(), a.ls.udpPort(), a.ls.hasV6()
	}
	return p
}

func (d *Daemon) watchLinks(a *attachment, stop <-chan struct{}) {
	for {
		ch := make(chan netlink.LinkUpdate, 256)
		done := make(chan struct{})
		err := d.subscribeLinks(a, ch, done)
		if err != nil {
			d.log.Warn("watch container interfaces (the sweep still covers new ones)", zap.String("container", a.Container.Name), zap.Error(err))
		} else {
			// Anything created before the subscription took effect.
			d.refreshCoverage(a, "watch started")
		}
		for err == nil {
			select {
			case <-stop:
				close(done)
				return
			case <-d.ctx.Done():
				close(done)
				return
			case u, ok := <-ch:
				if !ok {
					err = errClosed
					break
				}
				if u.Header.Type != unix.RTM_NEWLINK {
					continue
				}
				// One refresh for a burst of events.
				for drained := false; !drained; {
					select {
					case <-ch:
					default:
						drained = true
					}
				}
				d.refreshCoverage(a, "link event")
			}
		}
		close(done)
		select {
		case <-stop:
			return
		case <-d.ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

type closedErr struct{}

func (closedErr) Error() string { return "link event stream closed" }

var errClosed error = closedErr{}

func (d *Daemon) subscribeLinks(a *attachment, ch chan netlink.LinkUpdate, done chan struct{}) error {
	d.mu.Lock()
	if a.netns == nil {
		d.mu.Unlock()
		return errClosed
	}
	fd, err := unix.Dup(int(a.netns.Fd()))
	d.mu.Unlock()
	if err != nil {
		return err
	}
	ns := netns.NsHandle(fd)
	defer ns.Close() // the subscription's socket keeps the netns
	return netlink.LinkSubscribeWithOptions(ch, done, netlink.LinkSubscribeOptions{
		Namespace:     &ns,
		ErrorCallback: func(err error) { d.log.Debug("link events", zap.String("container", a.Container.Name), zap.Error(err)) },
	})
}
