package enforce

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/clawd-dev/clawd/bpf"
)

// The executable guard (bpf/guard.c): host-wide programs that mark an
// address space whose executable was replaced (prctl PR_SET_MM), so that
// the connect hook records its executable as forged. They are pinned under
// <root>/guard/<hook> and keep recording while no daemon runs (a process
// that forges while the daemon is down is still caught after a restart).
// A restarted daemon attaches fresh programs, then swaps each pin to the
// new link and releases the old one; between the two both run, which is
// harmless (a mark is idempotent).
//
// Why the prctl hook is the raw sys_enter tracepoint and not the
// per-syscall syscalls/sys_enter_prctl (which this kernel has): the
// per-syscall tracepoints are themselves a probe on sys_enter (enabling
// any of them puts every syscall of every task on the traced entry path,
// the cost the raw hook has too), and on x86 they skip 32-bit (ia32 and
// x32) syscalls, so a 32-bit prctl(PR_SET_MM) would forge an executable
// unmarked. The raw hook's own work per syscall is two comparisons.

// guardHooks in attach order, each with why it is there (guard.c says more).
// fork and exec come first: a mark set by the prctl hook before fork
// propagation is in place would not reach a child forked meanwhile.
var guardHooks = []struct {
	name string
	prog func(*bpf.GuardPrograms) *ebpf.Program
	why  string
}{
	{"exec", func(p *bpf.GuardPrograms) *ebpf.Program { return p.ClawdGuardExec }, "a real exec clears the mark of the fresh address space"},
	{"fork", func(p *bpf.GuardPrograms) *ebpf.Program { return p.ClawdGuardFork }, "a forked child inherits its parent's mark"},
	{"prctl", func(p *bpf.GuardPrograms) *ebpf.Program { return p.ClawdGuardPrctl }, "prctl(PR_SET_MM) at syscall entry marks the address space"},
}

// loadGuard loads and attaches the guard, pinning its links under dir. On
// any error nothing of this run stays attached or pinned (pins of an
// earlier daemon stay, and go on recording).
func (e *Enforcer) loadGuard() (err error) {
	dir := filepath.Join(e.root, "guard")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	var objs bpf.GuardObjects
	if err := bpf.LoadGuardObjects(&objs, e.collOpts()); err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			return fmt.Errorf("load the executable guard: %+v", ve)
		}
		return fmt.Errorf("load the executable guard: %w", err)
	}
	defer objs.Close()
	// The overflow flag must exist before any mark can fail to be stored.
	if err := objs.ClawdXfV1.Update(uint64(0), uint8(0), ebpf.UpdateNoExist); err != nil && !errors.Is(err, ebpf.ErrKeyExist) {
		return fmt.Errorf("create the executable guard's overflow flag: %w", err)
	}
	var links []link.Link
	defer func() {
		for _, lk := range links {
			if err != nil {
				lk.Unpin()
			}
			lk.Close()
		}
	}()
	for _, h := range guardHooks {
		lk, err := link.AttachTracing(link.TracingOptions{Program: h.prog(&objs.GuardPrograms)})
		if err != nil {
			return fmt.Errorf("attach the executable guard's %s hook (%s): %w", h.name, h.why, err)
		}
		links = append(links, lk)
	}
	// All attached: swap the pins.
	for i, h := range guardHooks {
		pin := filepath.Join(dir, h.name)
		if old, err := link.LoadPinnedLink(pin, nil); err == nil {
			old.Unpin()
			old.Close()
		} else {
			os.Remove(pin)
		}
		if err := links[i].Pin(pin); err != nil {
			return fmt.Errorf("pin the executable guard's %s hook: %w", h.name, err)
		}
	}
	return nil
}

// ExeGuarded reports whether the executable guard runs (nil), or why not:
// then the kernel's record of a connecting executable may be forged and no
// program is known (policy binaries: fails closed).
func (e *Enforcer) ExeGuarded() error { return e.guardErr }

// ExeForged is the executable the connect hook records for a task whose
// address space replaced its executable (bpf/clawd.c EXE_FORGED).
const ExeForged = ^uint64(0)
