package daemon

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/clawd-dev/clawd/daemon/enforce"
)

// Check is one line of `clawd doctor`.
type Check struct {
	Name string `json:"name"`
	OK   bool   `json:"ok"`
	Warn bool   `json:"warn,omitempty"` // not fatal, but worth knowing
	Info string `json:"info"`
	Fix  string `json:"fix,omitempty"`
}

// Doctor checks the host for what clawd needs.
func Doctor(ctx context.Context, cfg Config) []Check {
	var cs []Check
	add := func(c Check) { cs = append(cs, c) }

	add(Check{Name: "root", OK: os.Geteuid() == 0, Info: fmt.Sprintf("uid %d", os.Geteuid()), Fix: "run clawd as root"})
	add(kernelCheck())
	_, err := os.Stat("/sys/kernel/btf/vmlinux")
	add(Check{Name: "btf", OK: err == nil, Info: "/sys/kernel/btf/vmlinux", Fix: "use a kernel built with CONFIG_DEBUG_INFO_BTF=y"})
	if m, err := enforce.Cgroup2Mount(); err != nil {
		add(Check{Name: "cgroup2", Info: err.Error(), Fix: "mount cgroup2 (mount -t cgroup2 none /sys/fs/cgroup/unified)"})
	} else {
		add(Check{Name: "cgroup2", OK: true, Info: "mounted at " + m})
	}
	if p, bad := enforce.NetClsActive(); bad {
		add(Check{Name: "net_cls/net_prio", Info: "cgroup v1 net_cls/net_prio mounted at " + p + ": the kernel stops matching sockets to cgroup v2",
			Fix: "umount " + p + ", or boot with cgroup_no_v1=net_cls,net_prio"})
	} else {
		add(Check{Name: "net_cls/net_prio", OK: true, Info: "not mounted"})
	}
	add(bpffsCheck(cfg.PinRoot))
	add(capsCheck())
	if err := enforce.Probe(); err != nil {
		add(Check{Name: "bpf programs", Info: "loading clawd's programs failed: " + err.Error(), Fix: "kernel >= 6.6 with cgroup BPF, sockops and tcx"})
	} else {
		add(Check{Name: "bpf programs", OK: true, Info: "cgroup sock_addr, sock, sockopt, skb, sockops and tcx programs load"})
	}
	add(lsmCheck())
	// One container runtime is enough; with neither, names cannot resolve.
	ctd := dialCheck("containerd", "unix", cfg.ContainerdAddress)
	dk := dialCheck("docker", "unix", strings.TrimPrefix(cfg.DockerHost, "unix://"))
	if ctd.OK || dk.OK {
		ctd.Warn, dk.Warn = !ctd.OK, !dk.OK
	}
	add(ctd)
	add(dk)
	c := dialCheck("daemon", "unix", cfg.Socket)
	c.Warn = !c.OK
	if !c.OK {
		c.Fix = "start it: systemctl start clawd (or clawd daemon)"
	}
	add(c)
	if c.OK {
		cs = append(cs, coverageChecks(ctx, cfg.Socket)...)
	}
	return cs
}

func kernelCheck() Check {
	var u unix.Utsname
	unix.Uname(&u)
	rel := unix.ByteSliceToString(u.Release[:])
	maj, min := 0, 0
	parts := strings.SplitN(rel, ".", 3)
	if len(parts) >= 2 {
		maj, _ = strconv.Atoi(parts[0])
		min, _ = strconv.Atoi(strings.TrimFunc(parts[1], func(r rune) bool { return r < '0' || r > '9' }))
	}
	ok := maj > 6 || (maj == 6 && min >= 6)
	return Check{Name: "kernel", OK: ok, Info: rel, Fix: "clawd needs Linux >= 6.6 (tcx, netns cookies in sockops)"}
}

func bpffsCheck(root string) Check {
	dir := root
	for dir != "/" {
		if _, err := os.Stat(dir); err == nil {
			break
		}
		dir = filepath.Dir(dir)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err == nil && uint32(st.Type) == 0xcafe4a11 {
		return Check{Name: "bpffs", OK: true, Info: "pins under " + root}
	}
	return Check{Name: "bpffs", OK: true, Warn: true, Info: "no bpffs at " + dir + " yet: the daemon mounts one at /sys/fs/bpf"}
}

func capsCheck() Check {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return Check{Name: "capabilities", Info: err.Error()}
	}
	var eff uint64
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "CapEff:"); ok {
			eff, _ = strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		}
	}
	need := map[string]uint{"CAP_BPF": 39, "CAP_NET_ADMIN": 12, "CAP_SYS_ADMIN": 21, "CAP_PERFMON": 38, "CAP_SYS_PTRACE": 19, "CAP_DAC_OVERRIDE": 1}
	var missing []string
	for n, bit := range need {
		if eff&(1<<bit) == 0 {
			missing = append(missing, n)
		}
	}
	if len(missing) > 0 {
		return Check{Name: "capabilities", Info: "missing " + strings.Join(missing, ", "), Fix: "run as root with full capabilities"}
	}
	return Check{Name: "capabilities", OK: true, Info: "CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN, CAP_PERFMON, CAP_SYS_PTRACE"}
}

func lsmCheck() Check {
	if err := enforce.ProbeLSM(); err == nil {
		return Check{Name: "lsm layer", OK: true, Info: "lsm_cgroup/socket_create loads: non-inet socket families are refused at socket()"}
	}
	lsm, err := os.ReadFile("/sys/kernel/security/lsm")
	lock, _ := os.ReadFile("/sys/kernel/security/lockdown")
	why := "the kernel refuses BPF LSM programs"
	switch {
	case err != nil:
		why = "securityfs not mounted, BPF LSM state unknown, and the program does not load"
	case !strings.Contains(string(lsm), "bpf"):
		why = "BPF LSM not enabled (no 'bpf' in /sys/kernel/security/lsm; boot with lsm=...,bpf)"
	case strings.Contains(string(lock), "[integrity]") || strings.Contains(string(lock), "[confidentiality]"):
		why = "kernel lockdown forbids LSM programs"
	}
	return Check{Name: "lsm layer", OK: true, Warn: true, Info: why + ": lsm_cgroup layer off; the tcx layer drops AF_PACKET/AF_XDP frames on the container's interfaces and behind them (veth peers, lower devices), and clawd refuses containers whose interfaces it cannot cover unless none of their processes can hold CAP_NET_RAW"}
}

func dialCheck(name, network, addr string) Check {
	c, err := net.DialTimeout(network, addr, 2*time.Second)
	if err != nil {
		return Check{Name: name, Info: fmt.Sprintf("%s: %v", addr, err), Fix: "start " + name + " or set its address"}
	}
	c.Close()
	return Check{Name: name, OK: true, Info: "reachable at " + addr}
}

// FormatChecks prints the checks and returns how many failed.
func FormatChecks(w io.Writer, cs []Check) int {
	bad := 0
	for _, c := range cs {
		mark := "ok  "
		switch {
		case !c.OK && !c.Warn:
			mark = "FAIL"
			bad++
		case c.Warn:
			mark = "warn"
		}
		fmt.Fprintf(w, "[%s] %-18s %s\n", mark, c.Name, c.Info)
		if (!c.OK || c.Warn) && c.Fix != "" {
			fmt.Fprintf(w, "       %-18s fix: %s\n", "", c.Fix)
		}
	}
	return bad
}
