//go:build clawd_prev && (386 || amd64 || arm || arm64 || loong64 || mips64le || mipsle || ppc64le || riscv64 || wasm)

package bpf

import _ "embed"

// A binary built with -tags clawd_prev loads the previous generation of
// clawd's programs (clawd.c compiled with -DCLAWD_PREV): same maps and
// programs, older bodies. Only the e2e upgrade test builds it, to prove that
// swapping changed programs into pinned links (link.Update) leaves no gap.
//
//go:embed testdata/clawd_prev_bpfel.o
var clawdPrev []byte

func init() { _ClawdBytes = clawdPrev }
