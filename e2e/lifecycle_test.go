package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/clawd-dev/clawd/daemon"
	"github.com/clawd-dev/clawd/daemon/enforce"
	"github.com/clawd-dev/clawd/e2e/harness"
)

// An attachment lives as long as its cgroup: not as long as the process
// attach named, nor where that process sits in the cgroup tree.

// hostPIDOf finds the host PID of the process in cgroup cg (or below)
// whose command line contains marker.
func hostPIDOf(t *testing.T, cg, marker string) int {
	t.Helper()
	var pid int
	eventually(t, "a process with "+marker, func() bool {
		pids, _ := enforce.CgroupProcs(cg)
		for _, p := range pids {
			if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p)); strings.Contains(strings.ReplaceAll(string(b), "\x00", " "), marker) {
				pid = p
				return true
			}
		}
		return false
	})
	return pid
}

func cgroupOf(t *testing.T, pid int) string {
	t.Helper()
	cg, err := enforce.CgroupOfPID(pid)
	if err != nil {
		t.Fatal(err)
	}
	return cg
}

// throughClawd checks that a request from ct reaches the upstream from
// clawd, not from the container.
func throughClawd(t *testing.T, ct *harness.Container, up *harness.Upstream, path string) {
	t.Helper()
	if out, code := wget(t, ct, upURL(path)); code != 0 {
		t.Fatalf("wget %s: %s", path, out)
	}
	if got := seenFrom(up, path); len(got) != 1 || !hostSide(got[0]) {
		t.Fatalf("%s seen from %v, want once from clawd", path, got)
	}
}

// `clawd attach --pid` names a launcher that exits: the rest of its cgroup
// stays enforced, through sweeps and a daemon restart.
func TestPidAttachOutlivesTheLauncher(t *testing.T) {
	ctd := harness.SharedContainerd(t)
	up := harness.SharedUpstream(t)
	cl := StartClawd(t, ctd, ClawdOpts{})
	// An init that reaps (busybox sh waits for any child): the launcher
	// does not linger as a zombie.
	ct := ctd.Run(t, "launcher", harness.RunOpts{Args: []string{"sh", "-c", "while true; do sleep 1; done"}})
	cg := cgroupOf(t, ct.PID)
	sh(t, ct, "(exec sleep 4.718 > /dev/null 2>&1 &)")
	launcher := hostPIDOf(t, cg, "sleep 4.718")
	out := cl.MustCLI("attach", "--pid", strconv.Itoa(launcher))
	if !strings.Contains(out, "attached pid-") {
		t.Fatalf("attach --pid: %s", out)
	}
	up.Reset()
	throughClawd(t, ct, up, "/pid-before")
	eventually(t, "the launcher to exit and be reaped", func() bool {
		_, err := os.Stat(fmt.Sprintf("/proc/%d", launcher))
		return err != nil
	})
	time.Sleep(2500 * time.Millisecond) // two sweeps
	if l := cl.List(); len(l) != 1 || l[0].State != daemon.StateEnforced {
		t.Fatalf("after the launcher exited: %+v", l)
	}
	throughClawd(t, ct, up, "/pid-after-exit")
	cl.Kill()
	cl.Start()
	if l := cl.List(); len(l) != 1 || l[0].State != daemon.StateEnforced {
		t.Fatalf("after a restart: %+v", l)
	}
	throughClawd(t, ct, up, "/pid-after-restart")
}

// A container whose init moves itself into a child cgroup (systemd as the
// container's init: init.scope; podman --systemd) is re-adopted after a
// restart. Processes in child cgroups stay enforced and cannot attach
// programs of their own over clawd's.
func TestChildCgroupsAfterRestart(t *testing.T) {
	ctd := harness.SharedContainerd(t)
	up := harness.SharedUpstream(t)
	cl := StartClawd(t, ctd, ClawdOpts{})
	ct := ctd.Run(t, "sysd", harness.RunOpts{Files: map[string]string{bypassBin(t): "/bypass"}})
	cl.MustCLI("attach", ct.Name)
	before := attachment(t, cl, ct.Name)
	cg := before.Cgroup
	move := func(child string, pids ...int) {
		if err := os.MkdirAll(filepath.Join(cg, child), 0o755); err != nil {
			t.Fatal(err)
		}
		for _, p := range pids {
			if err := os.WriteFile(filepath.Join(cg, child, "cgroup.procs"), []byte(strconv.Itoa(p)), 0); err != nil {
				t.Fatalf("move %d to %s: %v", p, child, err)
			}
		}
	}
	t.Cleanup(func() {
		// The runtime removes only the cgroup it made: empty and remove
		// the children first.
		ct.Stop(t)
		for _, c := range []string{"agent.scope", "init.scope"} {
			os.Remove(filepath.Join(cg, c))
		}
	})
	pids, err := enforce.CgroupProcs(cg)
	if err != nil || len(pids) == 0 {
		t.Fatalf("procs: %v %v", pids, err)
	}
	move("init.scope", pids...)

	cl.Kill()
	cl.Start()
	after := attachment(t, cl, ct.Name)
	if after.State != daemon.StateEnforced || after.ID != before.ID || !after.AttachedAt.Equal(before.AttachedAt) {
		t.Fatalf("after restart: %+v (before %+v)", after, before)
	}
	up.Reset()
	throughClawd(t, ct, up, "/init-scope")

	// A process in another child cgroup runs the hostile program there.
	sh(t, ct, "rm -f /tmp/go /tmp/child.out; (/bypass -gw-mac "+ct.GatewayMAC+" -wait /tmp/go -only tcp4,udp-sendto,packet-raw,bpf-attach,cgroup-move > /tmp/child.out 2>&1 &)")
	p := hostPIDOf(t, cg, "-wait /tmp/go")
	move("agent.scope", p)
	if got := cgroupOf(t, p); got != filepath.Join(cg, "agent.scope") {
		t.Fatalf("the program is in %s", got)
	}
	sh(t, ct, "touch /tmp/go")
	res := map[string]vectorResult{}
	eventually(t, "the child cgroup's results", func() bool {
		out, _ := sh(t, ct, "cat /tmp/child.out")
		res = parseVectors(out)
		return len(res) == 5
	})
	if r := res["tcp4"]; r.Result != "connected" || !strings.Contains(r.Detail, "200") {
		t.Errorf("tcp4 from a child cgroup: %+v, want a 200 through clawd", r)
	}
	if got := seenFrom(up, "/bypass-tcp4"); len(got) != 1 || !hostSide(got[0]) {
		t.Errorf("tcp4 from a child cgroup seen from %v, want clawd", got)
	}
	for _, v := range []string{"udp-sendto", "bpf-attach", "cgroup-move"} {
		if r := res[v]; r.Result != "blocked" {
			t.Errorf("%s from a child cgroup: %+v, want blocked", v, r)
		}
	}
	time.Sleep(300 * time.Millisecond)
	for _, e := range escaped(up) {
		t.Errorf("ESCAPED from a child cgroup: %s", e)
	}
}

// Pins under the pin root with no state record: adopted when their cgroup
// lives and the container is known, removed when the cgroup is gone, kept
// (cut off, "in-doubt") when the container cannot be identified. Each is
// audited; what is kept can be detached.
func TestOrphanPinsAreReconciled(t *testing.T) {
	ctd := harness.SharedContainerd(t)
	up := harness.SharedUpstream(t)
	cl := StartClawd(t, ctd, ClawdOpts{})
	live := ctd.Run(t, "orphan", harness.RunOpts{})
	gone := ctd.Run(t, "orphan-gone", harness.RunOpts{})
	unknown := ctd.Run(t, "orphan-unknown", harness.RunOpts{})
	for _, ct := range []*harness.Container{live, gone, unknown} {
		cl.MustCLI("attach", ct.Name)
	}
	ids := map[string]string{}
	for _, a := range cl.List() {
		ids[a.Container.Name] = a.ID
	}
	cl.Stop()
	// The state is lost (a new state dir, a crash before saving).
	if err := os.RemoveAll(filepath.Join(cl.StateDir, "attachments")); err != nil {
		t.Fatal(err)
	}
	gone.Stop(t)
	// Pins whose ID no runtime container has.
	unknownID := "containerd_default_vanished-" + ids[unknown.Name][len(ids[unknown.Name])-8:]
	if err := os.Rename(filepath.Join(cl.PinRoot, "att", ids[unknown.Name]), filepath.Join(cl.PinRoot, "att", unknownID)); err != nil {
		t.Fatal(err)
	}
	cl.Start()

	byID := map[string]daemon.AttachmentInfo{}
	for _, a := range cl.List() {
		byID[a.ID] = a
	}
	if a := byID[ids[live.Name]]; a.State != daemon.StateEnforced || a.Container.Name != live.Name {
		t.Errorf("orphan pins of a live container: %+v, want adopted", a)
	}
	if _, ok := byID[ids[gone.Name]]; ok {
		t.Errorf("orphan pins of a removed cgroup are listed: %+v", byID)
	}
	if _, err := os.Stat(filepath.Join(cl.PinRoot, "att", ids[gone.Name])); !os.IsNotExist(err) {
		t.Errorf("orphan pins of a removed cgroup remain: %v", err)
	}
	if a := byID[unknownID]; a.State != daemon.StateInDoubt || !strings.Contains(a.Reason, "cannot be identified") {
		t.Errorf("orphan pins of an unknown container: %+v, want kept in doubt", a)
	}
	audits := map[string]string{}
	for _, e := range cl.AuditEntries() {
		if e.Event == "orphan_pins" {
			audits[e.ContainerID] = e.Action
		}
	}
	if audits[live.ID] != "adopt" || audits[ids[gone.Name]] != "remove" || audits[unknownID] != "keep" {
		t.Errorf("orphan audit lines: %v", audits)
	}
	up.Reset()
	throughClawd(t, live, up, "/orphan-adopted")
	// Kept means cut off: the container's connects find no listener.
	if out, code := wget(t, unknown, upURL("/orphan-kept")); code == 0 {
		t.Errorf("the container of kept pins got out: %s", out)
	}
	if got := seenFrom(up, "/orphan-kept"); len(got) != 0 {
		t.Errorf("kept pins let a request out: %v", got)
	}
	if out, _ := cl.CLI("ls"); !strings.Contains(out, "in-doubt") {
		t.Errorf("clawd ls does not show the kept pins:\n%s", out)
	}
	// Attaching the adopted container again is the usual "already attached".
	if out, err := cl.CLI("attach", live.Name); err == nil || !strings.Contains(out, "already attached") {
		t.Errorf("attach of an adopted container: %v %s", err, out)
	}
	cl.MustCLI("detach", unknownID)
	if _, err := os.Stat(filepath.Join(cl.PinRoot, "att", unknownID)); !os.IsNotExist(err) {
		t.Errorf("detach left the kept pins: %v", err)
	}
	// Its container (never attached under its own ID now) is free again.
	eventually(t, "the formerly kept container to reach the upstream directly", func() bool {
		_, code := wget(t, unknown, upURL("/orphan-freed"))
		return code == 0
	})
}

// A cgroup that is empty but not removed keeps its attachment; after a
// restart with no process to reach its netns through, re-adoption is in
// doubt: the pins stay, `clawd ls` says so, and the sweep removes the
// attachment once the cgroup is gone.
func TestReadoptionInDoubtKeepsThePins(t *testing.T) {
	ctd := harness.SharedContainerd(t)
	cl := StartClawd(t, ctd, ClawdOpts{})
	root, err := enforce.Cgroup2Mount()
	if err != nil {
		t.Fatal(err)
	}
	cg, err := os.MkdirTemp(root, "clawd-doubt-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(cg) })
	fd, err := unix.Open(cg, unix.O_DIRECTORY|unix.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	proc := exec.Command("unshare", "--net", "sh", "-c", "ip link set lo up; exec sleep 300")
	proc.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: fd}
	err = proc.Start()
	unix.Close(fd)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { proc.Process.Kill(); proc.Wait() })
	sleeper := hostPIDOf(t, cg, "sleep 300")
	cl.MustCLI("attach", "--pid", strconv.Itoa(sleeper))
	id := cl.List()[0].ID
	proc.Process.Kill()
	proc.Wait()
	time.Sleep(2500 * time.Millisecond) // sweeps: empty is not gone
	if l := cl.List(); len(l) != 1 || l[0].State != daemon.StateEnforced {
		t.Fatalf("an empty cgroup that still exists lost its attachment: %+v", l)
	}
	cl.Kill()
	cl.Start()
	l := cl.List()
	if len(l) != 1 || l[0].State != daemon.StateInDoubt || !strings.Contains(l[0].Reason, "no live process") {
		t.Fatalf("after a restart with no process in the cgroup: %+v, want in doubt", l)
	}
	if _, err := os.Stat(filepath.Join(cl.PinRoot, "att", id)); err != nil {
		t.Fatalf("pins of an attachment in doubt are gone: %v", err)
	}
	keep := false
	for _, e := range cl.AuditEntries() {
		keep = keep || (e.Event == "readopt" && e.Action == "keep")
	}
	if !keep {
		t.Errorf("no readopt/keep audit line")
	}
	if err := os.Remove(cg); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the sweep to remove the attachment of the removed cgroup", func() bool { return len(cl.List()) == 0 })
	if _, err := os.Stat(filepath.Join(cl.PinRoot, "att", id)); !os.IsNotExist(err) {
		t.Errorf("pins remain after the cgroup went: %v", err)
	}
}
