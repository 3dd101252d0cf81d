// Package hostaddrs owns "the host's own addresses": the set that the
// proxy's and the DNS forwarder's address classes (a host address is
// special) and the kernel fast path's exclusions (daemon/fastpath.go) are
// judged by.
//
// Listing the interfaces' addresses is a netlink dump whose size grows with
// every interface (each container's veth adds one): done per connection it
// was a tenth of the proxy's CPU per new connection. A Set that Watch keeps
// current answers from a snapshot instead, replaced whole after every
// netlink address notification (subscribe first, then dump: no change is
// missed between the two). An address added to the host is seen from the
// moment its notification is read, microseconds after the kernel added it.
// While no watch runs (never started, or its subscription broke) every
// question dumps afresh, and an error listing them counts as "yes, the
// host's" (fail closed), as before.
package hostaddrs

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"
)

// Set is the host's addresses. The zero Set is usable (no watch: every
// question dumps).
type Set struct {
	snap atomic.Pointer[map[netip.Addr]bool] // nil: not watching
	mu   sync.Mutex
	subs []func() // called after the snapshot changed
}

// List dumps the host's addresses now (unmapped, without zone).
func List() ([]netip.Addr, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, err
	}
	out := make([]netip.Addr, 0, len(addrs))
	for _, x := range addrs {
		var ip net.IP
		switch v := x.(type) {
		case *net.IPNet:
			ip = v.IP
		case *net.IPAddr:
			ip = v.IP
		}
		if p, ok := netip.AddrFromSlice(ip); ok {
			out = append(out, p.Unmap())
		}
	}
	return out, nil
}

// Addrs is the host's addresses: the watched snapshot, or a fresh dump
// while no watch runs.
func (s *Set) Addrs() ([]netip.Addr, error) {
	if m := s.snap.Load(); m != nil {
		out := make([]netip.Addr, 0, len(*m))
		for a := range *m {
			out = append(out, a)
		}
		slices.SortFunc(out, netip.Addr.Compare) // as stable as a dump
		return out, nil
	}
	return List()
}

// Has reports whether a is one of the host's addresses.
func (s *Set) Has(a netip.Addr) bool {
	a = a.WithZone("").Unmap()
	if m := s.snap.Load(); m != nil {
		return (*m)[a]
	}
	addrs, err := List()
	if err != nil {
		return true // fail closed
	}
	for _, x := range addrs {
		if x == a {
			return true
		}
	}
	return false
}

// OnChange registers f, called (on the watch's goroutine) after every
// change notification, once the snapshot is current.
func (s *Set) OnChange(f func()) {
	s.mu.Lock()
	s.subs = append(s.subs, f)
	s.mu.Unlock()
}

// Watch keeps the snapshot current until ctx ends. A broken subscription
// drops the snapshot (questions dump afresh) and is retried.
func (s *Set) Watch(ctx context.Context, onErr func(error)) {
	for ctx.Err() == nil {
		if err := s.watchOnce(ctx); err != nil && onErr != nil && ctx.Err() == nil {
			onErr(err)
		}
		s.snap.Store(nil)
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

func (s *Set) watchOnce(ctx context.Context) error {
	ch := make(chan netlink.AddrUpdate, 256)
	done := make(chan struct{})
	defer close(done)
	// A subscription error (a full receive buffer drops notifications)
	// makes the snapshot untrustworthy at once: questions dump afresh.
	var broken atomic.Pointer[error]
	if err := netlink.AddrSubscribeWithOptions(ch, done, netlink.AddrSubscribeOptions{
		ErrorCallback: func(err error) {
			broken.Store(&err)
			s.snap.Store(nil)
		},
	}); err != nil {
		return err
	}
	fresh := func() error {
		if err := s.reload(); err != nil {
			return err
		}
		if e := broken.Load(); e != nil {
			return *e
		}
		s.notify()
		return nil
	}
	if err := fresh(); err != nil {
		return err
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case _, ok := <-ch:
			if !ok {
				return errors.New("netlink address subscription closed")
			}
			// Until the new dump is in, the old snapshot must not say
			// "not the host's" of the address just added.
			s.snap.Store(nil)
			for drained := false; !drained; {
				select {
				case _, ok := <-ch:
					if !ok {
						return errors.New("netlink address subscription closed")
					}
				default:
					drained = true
				}
			}
			if err := fresh(); err != nil {
				return err
			}
		}
	}
}

func (s *Set) reload() error {
	addrs, err := List()
	if err != nil {
		return err
	}
	m := make(map[netip.Addr]bool, len(addrs))
	for _, a := range addrs {
		m[a] = true
	}
	s.snap.Store(&m)
	return nil
}

func (s *Set) notify() {
	s.mu.Lock()
	subs := append([]func(){}, s.subs...)
	s.mu.Unlock()
	for _, f := range subs {
		f()
	}
}
