package ca

import (
	"bytes"
	"debug/elf"
	"encoding/pem"
	"fmt"
	"io"
	"os"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
)

// RuntimeTrust is one line of `clawd doctor --container`: a runtime found
// in the container and whether it will accept clawd's leaf certificates.
type RuntimeTrust struct {
	Runtime string `json:"runtime"`        // what was found ("node 24.22.3 (official build)")
	Path    string `json:"path,omitempty"` // where, as the container sees it
	Trusts  bool   `json:"trusts"`
	Info    string `json:"info"`          // why it does or does not
	Fix     string `json:"fix,omitempty"` // what to do when it does not
}

// EnvVar is one variable of the agent's environment.
type EnvVar struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// TrustEnv is the environment that points every runtime clawd knows at the
// files InstallTrust writes: additive variables at CAFile, replacing ones
// at BundleFile. It is what `clawd env` prints after the placeholders.
func TrustEnv() []EnvVar {
	return []EnvVar{
		{"NODE_EXTRA_CA_CERTS", CAFile},
		{"DENO_CERT", CAFile},
		{"SSL_CERT_FILE", BundleFile},
		{"REQUESTS_CA_BUNDLE", BundleFile},
		{"CURL_CA_BUNDLE", BundleFile},
		{"AWS_CA_BUNDLE", BundleFile},
		{"GIT_SSL_CAINFO", BundleFile},
	}
}

const (
	fixTrustCA = "attach with --trust-ca (or label the container clawd.trust-ca=true)"
	fixEnv     = "start the agent with the variables of `clawd env`"
)

// maxScanBinary bounds how much of an executable Inspect reads for its
// version string.
const maxScanBinary = 512 << 20

// Inspect reports, for every runtime clawd knows that it finds in the
// container root rootfs, whether it trusts caPEM, given environ (the
// environment of the container's first process, KEY=VALUE). It only reads.
func Inspect(rootfs string, caPEM []byte, environ []string) ([]RuntimeTrust, error) {
	ca, err := parseCA(caPEM)
	if err != nil {
		return nil, err
	}
	root, err := os.OpenRoot(rootfs)
	if err != nil {
		return nil, fmt.Errorf("inspect: %w", err)
	}
	defer root.Close()
	env := map[string]string{}
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok {
			env[k] = v
		}
	}
	in := inspector{root: root, ca: ca, env: env}
	return in.run(), nil
}

type inspector struct {
	root *os.Root
	ca   caEntry
	env  map[string]string
	out  []RuntimeTrust
}

func (in *inspector) add(r RuntimeTrust) {
	if r.Trusts {
		r.Fix = ""
	}
	in.out = append(in.out, r)
}

// fileTrusts reports whether the in-container file p holds the CA.
func (in *inspector) fileTrusts(p string) bool {
	if p == "" {
		return false
	}
	budget := 256
	real, err := resolve(in.root, p, &budget)
	if err != nil {
		return false
	}
	b, err := readRegular(in.root, real, maxBundle)
	if err != nil {
		return false
	}
	if bytes.Contains(b, []byte(in.ca.marker)) {
		return true
	}
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return false
		}
		if bytes.Equal(blk.Bytes, in.ca.der) {
			return true
		}
	}
}

// envTrusts reports whether variable k is set and names a file holding
// the CA, and says so.
func (in *inspector) envTrusts(k string) (bool, string) {
	v, ok := in.env[k]
	if !ok || v == "" {
		return false, ""
	}
	if in.fileTrusts(v) {
		return true, fmt.Sprintf("%s=%s holds clawd's CA", k, v)
	}
	return false, fmt.Sprintf("%s=%s does not hold clawd's CA", k, v)
}

// systemBundle is the first system bundle that exists and whether it
// holds the CA.
func (in *inspector) systemBundle() (string, bool) {
	for _, p := range bundlePaths {
		budget := 256
		if real, err := resolve(in.root, p, &budget); err == nil {
			if fi, err := in.root.Lstat(real); err == nil && fi.Mode().IsRegular() {
				return p, in.fileTrusts(p)
			}
		}
	}
	return "", false
}

func (in *inspector) run() []RuntimeTrust {
	found := scan(in.root, scanBudget)
	sys, sysOK := in.systemBundle()
	sysInfo := "system bundle " + sys
	switch {
	case sys == "":
		sysInfo = "system bundle, and there is none"
	case sysOK:
		sysInfo += " (it holds clawd's CA)"
	default:
		sysInfo += " (it lacks clawd's CA)"
	}
	sysLine := "holds clawd's CA"
	if !sysOK {
		sysLine = "lacks clawd's CA"
	}
	in.add(RuntimeTrust{Runtime: "system trust bundle (OpenSSL, GnuTLS)", Path: sys, Trusts: sysOK, Info: sysLine, Fix: fixTrustCA})
	for _, f := range []string{CAFile, BundleFile} {
		ok := in.fileTrusts(f)
		info := "present"
		if !ok {
			info = "missing or without clawd's CA: the variables of `clawd env` point at it"
		}
		in.add(RuntimeTrust{Runtime: "clawd file", Path: f, Trusts: ok, Info: info, Fix: fixTrustCA})
	}

	// viaEnvOrSystem: a runtime that reads variable k, else the system bundle.
	viaEnvOrSystem := func(rt, p, k string) {
		if ok, why := in.envTrusts(k); why != "" {
			in.add(RuntimeTrust{Runtime: rt, Path: p, Trusts: ok, Info: why, Fix: fmt.Sprintf("%s=%s (`clawd env`)", k, BundleFile)})
			return
		}
		in.add(RuntimeTrust{Runtime: rt, Path: p, Trusts: sysOK, Info: "uses the " + sysInfo, Fix: fixTrustCA})
	}
	for _, p := range in.dedupe(found.bins["curl"]) {
		viaEnvOrSystem("curl", p, "CURL_CA_BUNDLE")
	}
	for _, p := range in.dedupe(found.bins["git"]) {
		viaEnvOrSystem("git", p, "GIT_SSL_CAINFO")
	}
	for _, p := range in.dedupe(found.bins["node"]) {
		in.node(p, sysOK, sysInfo)
	}
	for _, p := range in.dedupe(found.bins["python"]) {
		in.python(p, sysOK, sysInfo)
	}
	for _, p := range in.dedupe(found.certifi) {
		in.certifi(p)
	}
	for _, p := range in.dedupe(found.java) {
		in.java(p)
	}
	for _, p := range in.dedupe(found.bins["deno"]) {
		ok, why := in.envTrusts("DENO_CERT")
		if why == "" {
			why = "Deno uses its own Mozilla root list"
			if strings.Contains(in.env["DENO_TLS_CA_STORE"], "system") && sysOK {
				ok, why = true, "DENO_TLS_CA_STORE="+in.env["DENO_TLS_CA_STORE"]+" reads the "+sysInfo
			}
		}
		in.add(RuntimeTrust{Runtime: "deno", Path: p, Trusts: ok, Info: why, Fix: "DENO_CERT=" + CAFile + " (`clawd env`)"})
	}
	for _, p := range in.dedupe(found.bins["bun"]) {
		ok, why := in.envTrusts("NODE_EXTRA_CA_CERTS")
		if why == "" {
			why = "Bun uses its own root list"
		}
		in.add(RuntimeTrust{Runtime: "bun", Path: p, Trusts: ok, Info: why, Fix: "NODE_EXTRA_CA_CERTS=" + CAFile + " (`clawd env`)"})
	}
	for _, p := range in.dedupe(found.bins["claude"]) {
		// Claude Code's native build (Bun) reads the system bundle and
		// NODE_EXTRA_CA_CERTS (measured by e2e/realclients_test.go).
		if ok, why := in.envTrusts("NODE_EXTRA_CA_CERTS"); ok {
			in.add(RuntimeTrust{Runtime: "claude (Claude Code)", Path: p, Trusts: true, Info: why})
			continue
		}
		in.add(RuntimeTrust{Runtime: "claude (Claude Code)", Path: p, Trusts: sysOK, Info: "reads NODE_EXTRA_CA_CERTS and the " + sysInfo, Fix: fixTrustCA})
	}
	for _, p := range in.dedupe(found.bins["aws"]) {
		ok, why := in.envTrusts("AWS_CA_BUNDLE")
		if why == "" {
			why = "the AWS CLI uses the CA bundle it ships (botocore, or its bundled certifi)"
		}
		in.add(RuntimeTrust{Runtime: "aws (AWS CLI)", Path: p, Trusts: ok, Info: why, Fix: "AWS_CA_BUNDLE=" + BundleFile + " (`clawd env`)"})
	}
	if found.truncated {
		in.add(RuntimeTrust{Runtime: "search", Path: "/", Info: fmt.Sprintf("stopped after %d entries: runtimes further down were not checked", scanBudget)})
	}
	return in.out
}

// dedupe resolves paths inside the root and drops duplicates (links to
// one file) and anything that is not a regular file.
func (in *inspector) dedupe(ps []string) []string {
	var out []string
	seen := map[string]bool{}
	for _, p := range ps {
		budget := 256
		real, err := resolve(in.root, p, &budget)
		if err != nil || seen[real] {
			continue
		}
		if fi, err := in.root.Lstat(real); err != nil || !fi.Mode().IsRegular() {
			continue
		}
		seen[real] = true
		out = append(out, "/"+real)
	}
	slices.Sort(out)
	return out
}

var nodeVersionRE = regexp.MustCompile(`download/release/v([0-9]+)\.([0-9]+)\.([0-9]+)`)

// node tells the official builds (statically linked against their own
// OpenSSL, with their own compiled-in roots: the system bundle is ignored)
// from distribution builds (linked against the system's OpenSSL, or
// libnode, and its store).
func (in *inspector) node(p string, sysOK bool, sysInfo string) {
	libs := in.imports(p)
	distro := slices.ContainsFunc(libs, func(l string) bool {
		return strings.HasPrefix(l, "libnode.so") || strings.HasPrefix(l, "libssl.so") || strings.HasPrefix(l, "libcrypto.so")
	})
	extra, extraWhy := in.envTrusts("NODE_EXTRA_CA_CERTS")
	if distro {
		rt := "node (distribution build, system OpenSSL)"
		switch {
		case extra:
			in.add(RuntimeTrust{Runtime: rt, Path: p, Trusts: true, Info: extraWhy})
		default:
			in.add(RuntimeTrust{Runtime: rt, Path: p, Trusts: sysOK, Info: "uses the " + sysInfo, Fix: fixTrustCA})
		}
		return
	}
	ver := in.nodeVersion(p)
	rt := "node (official build, own OpenSSL and roots)"
	major := 0
	if ver != "" {
		rt = "node " + ver + " (official build, own OpenSSL and roots)"
		major, _ = strconv.Atoi(strings.SplitN(ver, ".", 2)[0])
	}
	fix := "NODE_EXTRA_CA_CERTS=" + CAFile + " (`clawd env`)"
	if major >= 24 {
		fix += "; or NODE_USE_SYSTEM_CA=1 with --trust-ca"
	}
	useSystem := in.env["NODE_USE_SYSTEM_CA"] == "1" || strings.Contains(in.env["NODE_OPTIONS"], "--use-system-ca")
	switch {
	case extra:
		in.add(RuntimeTrust{Runtime: rt, Path: p, Trusts: true, Info: extraWhy})
	case useSystem && sysOK:
		in.add(RuntimeTrust{Runtime: rt, Path: p, Trusts: true, Info: "told to use the " + sysInfo})
	default:
		why := "ignores the system bundle: it trusts only its compiled-in roots"
		if extraWhy != "" {
			why = extraWhy
		}
		in.add(RuntimeTrust{Runtime: rt, Path: p, Trusts: false, Info: why, Fix: fix})
	}
}

// python: the ssl module reads SSL_CERT_FILE, else the OpenSSL store it
// was built with. Distribution and Docker-official Pythons (under /usr)
// use the system's; standalone builds (uv, pyenv-less installers) carry
// their own OpenSSL whose default paths rarely exist.
func (in *inspector) python(p string, sysOK bool, sysInfo string) {
	if ok, why := in.envTrusts("SSL_CERT_FILE"); why != "" {
		in.add(RuntimeTrust{Runtime: "python (ssl module)", Path: p, Trusts: ok, Info: why, Fix: "SSL_CERT_FILE=" + BundleFile + " (`clawd env`)"})
		return
	}
	if strings.HasPrefix(p, "/usr/") {
		in.add(RuntimeTrust{Runtime: "python (ssl module)", Path: p, Trusts: sysOK, Info: "uses the " + sysInfo, Fix: fixTrustCA})
		return
	}
	in.add(RuntimeTrust{Runtime: "python (ssl module)", Path: p, Trusts: false,
		Info: "a Python outside /usr may carry its own OpenSSL with its own default paths", Fix: "SSL_CERT_FILE=" + BundleFile + " (`clawd env`)"})
}

// certifi: requests and httpx take their roots from certifi.where();
// Debian's certifi returns the system bundle, pip's its own cacert.pem.
// REQUESTS_CA_BUNDLE overrides for requests.
func (in *inspector) certifi(p string) {
	rt := "certifi (requests, httpx)"
	if ok, why := in.envTrusts("REQUESTS_CA_BUNDLE"); ok {
		in.add(RuntimeTrust{Runtime: rt, Path: p, Trusts: true, Info: why})
		return
	}
	core, _ := readRegular(in.root, strings.TrimPrefix(path.Join(path.Dir(p), "core.py"), "/"), 1<<16)
	if bytes.Contains(core, []byte("/etc/ssl/certs/")) {
		sys, ok := in.systemBundle()
		in.add(RuntimeTrust{Runtime: rt + ", distribution build", Path: p, Trusts: ok, Info: "where() returns the system bundle " + sys, Fix: fixTrustCA})
		return
	}
	ok := in.fileTrusts(p)
	info := "its cacert.pem holds clawd's CA"
	if !ok {
		info = "its cacert.pem lacks clawd's CA"
	}
	in.add(RuntimeTrust{Runtime: rt, Path: p, Trusts: ok, Info: info, Fix: fixTrustCA + "; or REQUESTS_CA_BUNDLE and SSL_CERT_FILE (`clawd env`)"})
}

func (in *inspector) java(p string) {
	b, err := readRegular(in.root, strings.TrimPrefix(p, "/"), maxJavaStore)
	if err != nil {
		in.add(RuntimeTrust{Runtime: "java cacerts", Path: p, Info: err.Error()})
		return
	}
	if f := javaFormat(b); f == "jks" || f == "jceks" {
		in.add(RuntimeTrust{Runtime: "java cacerts (" + strings.ToUpper(f) + ")", Path: p, Info: "clawd does not write " + strings.ToUpper(f) + " stores",
			Fix: "in the image: keytool -importcert -noprompt -alias clawd-ca -storepass changeit -keystore " + p + " -file " + CAFile})
		return
	}
	ok, err := javaHas(b, in.ca.der)
	info := "holds clawd's CA"
	switch {
	case err != nil:
		info = err.Error()
	case !ok:
		info = "lacks clawd's CA"
	}
	in.add(RuntimeTrust{Runtime: "java cacerts (PKCS#12)", Path: p, Trusts: ok, Info: info, Fix: fixTrustCA})
}

// imports lists the shared libraries the ELF file p needs (nil if it is
// not a dynamic ELF).
func (in *inspector) imports(p string) []string {
	f, err := in.root.OpenFile(strings.TrimPrefix(p, "/"), os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return nil
	}
	ef, err := elf.NewFile(f)
	if err != nil {
		return nil
	}
	defer ef.Close()
	libs, _ := ef.ImportedLibraries()
	return libs
}

// nodeVersion finds the release URL Node embeds ("download/release/vX.Y.Z").
func (in *inspector) nodeVersion(p string) string {
	f, err := in.root.OpenFile(strings.TrimPrefix(p, "/"), os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return ""
	}
	defer f.Close()
	r := io.LimitReader(f, maxScanBinary)
	buf := make([]byte, 1<<20)
	keep := 0
	for {
		n, err := io.ReadFull(r, buf[keep:])
		chunk := buf[:keep+n]
		if m := nodeVersionRE.FindSubmatch(chunk); m != nil {
			return string(m[1]) + "." + string(m[2]) + "." + string(m[3])
		}
		if err != nil {
			return ""
		}
		// Keep a tail so a match across reads is found.
		keep = copy(buf, chunk[len(chunk)-64:])
	}
}
