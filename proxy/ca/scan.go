package ca

import (
	"io/fs"
	"os"
	"path"
	"regexp"
	"strings"
)

// scanBudget bounds the entries one walk of a container root visits: the
// walk runs while a container is frozen for attach, and the root is the
// agent's (a crafted tree must not stall clawd). A Debian root with Node,
// Python, two SDKs and Claude Code has about 25,000.
const scanBudget = 300_000

// pruned are root-relative directories that never hold a trust store or a
// runtime clawd looks for, and can be large.
var pruned = map[string]bool{
	"proc": true, "sys": true, "dev": true, "run": true, "tmp": true, "boot": true,
	"var/cache": true, "var/log": true, "var/lib/apt": true, "var/lib/dpkg": true, "var/tmp": true,
	"usr/share/doc": true, "usr/share/man": true, "usr/share/locale": true, "usr/share/i18n": true,
	"usr/share/zoneinfo": true, "usr/include": true, "usr/src": true,
	"lib/modules": true, "usr/lib/modules": true, "lib/firmware": true, "usr/lib/firmware": true,
}

// prunedNames are directory names skipped anywhere.
var prunedNames = map[string]bool{".git": true, "__pycache__": true}

var pythonRE = regexp.MustCompile(`^python3(\.[0-9]+)?$`)

// binaryKinds maps executable names (in a bin or sbin directory) to the
// runtime they are.
var binaryKinds = map[string]string{
	"node": "node", "nodejs": "node",
	"deno": "deno", "bun": "bun",
	"claude": "claude", "claude.exe": "claude",
	"git": "git", "curl": "curl", "aws": "aws", "java": "java",
}

// found is what one walk of a container root found; paths are
// root-relative and not resolved (links appear as themselves).
type found struct {
	certifi   []string            // .../certifi/cacert.pem
	java      []string            // .../lib/security/cacerts and the distributions' shared stores
	bins      map[string][]string // runtime kind -> executables
	truncated bool                // the budget ran out
}

// javaShared are the distributions' shared Java stores (the JDKs' own
// cacerts usually link to them).
var javaShared = []string{"etc/ssl/certs/java/cacerts", "etc/pki/java/cacerts", "etc/pki/ca-trust/extracted/java/cacerts"}

// scan walks root (never following symlinked directories) for certifi
// bundles, Java cacerts stores and runtime executables, visiting at most
// budget entries.
func scan(root *os.Root, budget int) found {
	f := found{bins: map[string][]string{}}
	n := 0
	fs.WalkDir(root.FS(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if d != nil && d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if n++; n > budget {
			f.truncated = true
			return fs.SkipAll
		}
		name := d.Name()
		if d.IsDir() {
			if pruned[p] || prunedNames[name] {
				return fs.SkipDir
			}
			return nil
		}
		dir := path.Base(path.Dir(p))
		switch {
		case name == "cacert.pem" && dir == "certifi":
			f.certifi = append(f.certifi, p)
		case name == "cacerts" && (dir == "security" || isJavaShared(p)):
			f.java = append(f.java, p)
		case dir == "bin" || dir == "sbin":
			if !d.Type().IsRegular() && d.Type()&fs.ModeSymlink == 0 {
				return nil
			}
			if k, ok := binaryKinds[name]; ok {
				f.bins[k] = append(f.bins[k], p)
			} else if pythonRE.MatchString(name) {
				f.bins["python"] = append(f.bins["python"], p)
			}
		}
		return nil
	})
	return f
}

func isJavaShared(p string) bool {
	for _, s := range javaShared {
		if p == s {
			return true
		}
	}
	return strings.HasSuffix(p, "/java/cacerts")
}
