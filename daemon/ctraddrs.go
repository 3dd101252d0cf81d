package daemon

import (
	"fmt"
	"net/netip"
	"slices"
	"sync"

	"github.com/vishvananda/netlink"

	"github.com/clawd-dev/clawd/daemon/nsenter"
)

// ctrAddrs knows the interface addresses of every attached container's
// network namespace, read at attach, re-adoption and each sweep. A DNS
// answer (or, later, a dial) pointing a name at one of them is rebinding
// into another container, not a destination a rule by name allows.
type ctrAddrs struct {
	mu    sync.RWMutex
	byID  map[string][]netip.Addr // attachment ID -> its namespace's addresses
	count map[netip.Addr]int      // address -> attachments holding it (pods share)
}

func newCtrAddrs() *ctrAddrs {
	return &ctrAddrs{byID: map[string][]netip.Addr{}, count: map[netip.Addr]int{}}
}

// Has reports whether a is an address of an attached container's network
// namespace (v4-mapped and zoned forms count as the plain address).
func (c *ctrAddrs) Has(a netip.Addr) bool {
	a = a.WithZone("").Unmap()
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.count[a] > 0
}

// set replaces the addresses of attachment id; it reports whether they
// changed.
func (c *ctrAddrs) set(id string, addrs []netip.Addr) (changed bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	changed = !slices.Equal(c.byID[id], addrs)
	c.dropLocked(id)
	if len(addrs) == 0 {
		return changed
	}
	c.byID[id] = addrs
	for _, a := range addrs {
		c.count[a]++
	}
	return changed
}

// remove forgets attachment id.
func (c *ctrAddrs) remove(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.dropLocked(id)
}

func (c *ctrAddrs) dropLocked(id string) {
	for _, a := range c.byID[id] {
		if c.count[a]--; c.count[a] <= 0 {
			delete(c.count, a)
		}
	}
	delete(c.byID, id)
}

// netnsAddrs lists the addresses of every interface but loopback in the
// network namespace at path (loopback is special anyway).
func netnsAddrs(path string) ([]netip.Addr, error) {
	var out []netip.Addr
	err := nsenter.Do(path, func() error {
		as, err := netlink.AddrList(nil, netlink.FAMILY_ALL)
		if err != nil {
			return err
		}
		seen := map[netip.Addr]bool{}
		for _, a := range as {
			ip, ok := netip.AddrFromSlice(a.IP)
			if !ok {
				continue
			}
			ip = ip.Unmap()
			if ip.IsLoopback() || seen[ip] {
				continue
			}
			seen[ip] = true
			out = append(out, ip)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list addresses in %s: %w", path, err)
	}
	return out, nil
}

// ids lists the keys of the registry.
func (c *ctrAddrs) ids() []string {
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := make([]string, 0, len(c.byID))
	for id := range c.byID {
		out = append(out, id)
	}
	return out
}
