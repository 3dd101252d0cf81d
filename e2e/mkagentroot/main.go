// Command mkagentroot builds the real-client agent root of
// e2e/harness/agentroot.sh into its cache (/var/cache/clawd-e2e), or says
// it is there already. `make test` runs it before the suite, so a first
// build (about 3 minutes) does not count against the test timeout.
package main

import (
	"fmt"
	"os"
	"time"

	"github.com/clawd-dev/clawd/e2e/harness"
)

func main() {
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "mkagentroot: needs root (mmdebstrap)")
		os.Exit(1)
	}
	began := time.Now()
	_, info, err := harness.PrepareAgentRoot(func(f string, a ...any) { fmt.Fprintf(os.Stderr, f+"\n", a...) })
	if err != nil {
		fmt.Fprintln(os.Stderr, "mkagentroot:", err)
		os.Exit(1)
	}
	fmt.Printf("%s; ready after %s\n", info, time.Since(began).Truncate(time.Millisecond))
}
