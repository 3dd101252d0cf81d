//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//
// The executable guard (issue 16, round 2 hole 1), loaded once per host and
// pinned like the attachments' links, so it keeps recording while no daemon
// runs. prctl(PR_SET_MM, PR_SET_MM_MAP or PR_SET_MM_EXE_FILE) replaces
// mm->exe_file, the very field the connect hook (clawd.c, remember) and
// /proc/PID/exe report, and needs privilege only in the caller's own user
// namespace: any process can make the kernel name another file as its
// executable. These programs mark an address space (mm_struct) whose
// exe_file was replaced since its last exec; the connect hook records a
// marked task's executable as "forged" (EXE_FORGED), so no binaries: rule is
// satisfied by it.
//
// Marks are keyed by the mm_struct's address: every task sharing the mm
// (threads, CLONE_VM children) is marked at once. A freed mm's address is
// reused only by a new mm, and both ways a user mm is made (exec, fork)
// overwrite the mark of its address, so a stale mark never names another
// process. Key 0 is the overflow flag: set when a mark could not be stored,
// after which the connect hook treats every executable as forged (fail
// closed) until the host reboots or the map is recreated.

#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

char __license[] SEC("license") = "GPL";

struct mm_struct {
	void *exe_file;
} __attribute__((preserve_access_index));
struct task_struct {
	struct mm_struct *mm;
} __attribute__((preserve_access_index));
struct file;
struct linux_binprm;

// mm_struct address -> 1 (exe_file replaced since the last exec); key 0 ->
// overflow flag (0 or 1), created by the daemon before the programs attach.
// The connect hook (clawd.c) declares the same pinned map.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u64);
	__type(value, __u8);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} clawd_xf_v1 SEC(".maps");

static __always_inline void mark(__u64 mm) {
	__u8 one = 1;
	if (!mm)
		return;
	if (bpf_map_update_elem(&clawd_xf_v1, &mm, &one, BPF_ANY) != 0) {
		__u64 zero = 0;
		__u8 *ov = bpf_map_lookup_elem(&clawd_xf_v1, &zero);
		if (ov)
			*ov = 1;
	}
}

// Syscall numbers of prctl on x86_64: native (x32 sets bit 30 of the same
// number) and ia32 compat (172, whose first argument is in bx). A native
// 172 is iopl: marking an iopl(35) caller too is harmless (fail closed).
#define NR_PRCTL 157
#define NR_PRCTL_IA32 172
#define X32_BIT 0x40000000
#define PR_SET_MM 35

struct pt_regs {
	unsigned long di;
	unsigned long bx;
} __attribute__((preserve_access_index));

// Why: prctl(PR_SET_MM, …) is how a process replaces its exe_file
// (PR_SET_MM_MAP with exe_fd, PR_SET_MM_EXE_FILE). The mark is set at
// syscall entry, before the kernel acts, whatever the sub-option and the
// outcome, so the forged file is never seen unmarked. (An fentry on
// replace_mm_exe_file would be narrower, but kernels under lockdown refuse
// fentry; raw tracepoints with BTF load.) The test is two comparisons, run
// for every syscall on the host.
SEC("tp_btf/sys_enter")
int BPF_PROG(clawd_guard_prctl, struct pt_regs *regs, long id) {
	if ((id & ~X32_BIT) == NR_PRCTL) {
		if (regs->di != PR_SET_MM)
			return 0;
	} else if (id == NR_PRCTL_IA32) {
		if ((__u32)regs->bx != PR_SET_MM)
			return 0;
	} else {
		return 0;
	}
	struct task_struct *t = bpf_get_current_task_btf();
	mark((__u64)t->mm);
	return 0;
}

// Why: fork copies exe_file into the child's new mm; the child is forged if
// its parent was. A CLONE_VM child (vfork, threads) shares the parent's mm
// and its mark already. Overwriting also clears a stale mark left at the
// address by a freed mm.
SEC("tp_btf/sched_process_fork")
int BPF_PROG(clawd_guard_fork, struct task_struct *parent, struct task_struct *child) {
	__u64 pm = (__u64)parent->mm, cm = (__u64)child->mm;
	if (!cm || cm == pm)
		return 0;
	if (pm && bpf_map_lookup_elem(&clawd_xf_v1, &pm))
		mark(cm);
	else
		bpf_map_delete_elem(&clawd_xf_v1, &cm);
	return 0;
}

// Why: a real exec gives the task a fresh mm whose exe_file is the file the
// kernel just executed: clear whatever mark its address carries.
SEC("tp_btf/sched_process_exec")
int BPF_PROG(clawd_guard_exec, struct task_struct *p, int old_pid, struct linux_binprm *bprm) {
	__u64 m = (__u64)p->mm;
	if (m)
		bpf_map_delete_elem(&clawd_xf_v1, &m);
	return 0;
}
