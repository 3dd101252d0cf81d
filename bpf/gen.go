// Package bpf holds clawd's eBPF programs (clawd.c) and the Go bindings
// bpf2go generates for them. The generated files are committed so that a
// build needs no clang; `make generate` regenerates them.
package bpf

//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -cc clang -cflags "-O2 -g -Wall -Werror -I/usr/include/x86_64-linux-gnu" -target bpfel,bpfeb -type orig -type tuple_key -type listener_key -type counters -type exe_id -type fp_key -type fp_ports -type flow -type fp_event -type fp_counters Clawd clawd.c

//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -cc clang -cflags "-O2 -g -Wall -Werror -I/usr/include/x86_64-linux-gnu" -target bpfel,bpfeb Guard guard.c

//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -cc clang -cflags "-O2 -g -Wall -Werror -I/usr/include/x86_64-linux-gnu" -target bpfel,bpfeb Lsm lsm.c

// The previous program generation, for the e2e upgrade test only (a binary
// built with -tags clawd_prev carries it; see prev.go): the same maps and
// programs, with the bodies clawd.c has under CLAWD_PREV.
//go:generate clang -O2 -g -Wall -Werror -I/usr/include/x86_64-linux-gnu -target bpfel -DCLAWD_PREV -c clawd.c -o testdata/clawd_prev_bpfel.o
//go:generate llvm-strip -g testdata/clawd_prev_bpfel.o
