package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/oci"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"gopkg.in/yaml.v3"

	"github.com/clawd-dev/clawd/daemon"
	"github.com/clawd-dev/clawd/e2e/harness"
)

// notifySocket is a fake systemd NOTIFY_SOCKET: it collects the datagrams
// the daemon sends and hands each to onMsg as it arrives.
func notifySocket(t *testing.T, onMsg func(string)) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 4096)
		for {
			n, _, err := conn.ReadFromUnix(buf)
			if err != nil {
				return // closed at cleanup
			}
			onMsg(string(buf[:n]))
		}
	}()
	t.Cleanup(func() { conn.Close(); <-done })
	return path
}

func hasLine(msg, line string) bool { return slices.Contains(strings.Split(msg, "\n"), line) }

// TestOpsNotifyReadyAfterReadoptReloadStop runs the daemon as systemd's
// Type=notify would: READY=1 only once an attachment left by a crashed
// daemon is re-adopted and the listeners answer, SIGHUP reloads (the audit
// log is reopened, as logrotate needs), SIGTERM says STOPPING=1.
func TestOpsNotifyReadyAfterReadoptReloadStop(t *testing.T) {
	ctd := harness.SharedContainerd(t)
	up := harness.SharedUpstream(t)
	ct := ctd.Run(t, "ops-notify", harness.RunOpts{})
	c := StartClawd(t, ctd, ClawdOpts{})
	c.MustCLI("attach", ct.Name)
	c.Kill() // a crash: pins stay, the container is cut off

	type ready struct {
		list []daemon.AttachmentInfo
		err  error
	}
	readyCh := make(chan ready, 4)
	stopping := make(chan struct{}, 4)
	sock := notifySocket(t, func(msg string) {
		if hasLine(msg, "READY=1") {
			// What a unit ordered After=clawd.service would see at once.
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			l, err := c.Client().List(ctx)
			cancel()
			readyCh <- ready{l, err}
		}
		if hasLine(msg, "STOPPING=1") {
			stopping <- struct{}{}
		}
	})
	t.Setenv("NOTIFY_SOCKET", sock)
	c.Start()

	var r ready
	select {
	case r = <-readyCh:
	case <-time.After(30 * time.Second):
		t.Fatal("no READY=1 on NOTIFY_SOCKET")
	}
	if r.err != nil {
		t.Fatalf("control socket not answering when READY=1 was sent: %v", r.err)
	}
	if len(r.list) != 1 || r.list[0].Container.Name != ct.Name {
		t.Fatalf("at READY=1 clawd ls showed %+v, want exactly the re-adopted %s", r.list, ct.Name)
	}

	// The host-side API answers health checks.
	resp, err := http.Get("http://" + c.API + "/healthz")
	if err != nil {
		t.Fatalf("healthz: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("healthz: %d %s", resp.StatusCode, body)
	}

	// The re-adopted container is served again.
	up.Reset()
	if out, code := wget(t, ct, upURL("/ops-after-readopt")); code != 0 {
		t.Fatalf("request through the re-adopted attachment failed: %s", out)
	}

	// SIGHUP (ExecReload): the audit log is reopened after logrotate moved it.
	rotated := c.Audit + ".1"
	if err := os.Rename(c.Audit, rotated); err != nil {
		t.Fatal(err)
	}
	c.HUP()
	n := 0
	eventually(t, "a request after SIGHUP logged in a fresh audit log", func() bool {
		n++
		path := fmt.Sprintf("/ops-after-hup-%d", n)
		wget(t, ct, upURL(path))
		b, err := os.ReadFile(c.Audit)
		return err == nil && bytes.Contains(b, []byte("/ops-after-hup-"))
	})
	if b, _ := os.ReadFile(rotated); !bytes.Contains(b, []byte("/ops-after-readopt")) || bytes.Contains(b, []byte("/ops-after-hup-")) {
		t.Errorf("rotated audit log should hold the requests before SIGHUP only:\n%s", tail(string(b), 2000))
	}
	if _, err := c.Client().Status(context.Background()); err != nil {
		t.Fatalf("daemon gone after SIGHUP: %v", err)
	}
	select {
	case <-readyCh:
		t.Error("READY=1 sent again after SIGHUP")
	default:
	}

	// SIGTERM: STOPPING=1.
	c.Stop()
	select {
	case <-stopping:
	case <-time.After(20 * time.Second):
		t.Fatal("no STOPPING=1 on NOTIFY_SOCKET after SIGTERM")
	}
}

// TestOpsUnitVerifies checks systemd/clawd.service with systemd-analyze
// verify, pointing ExecStart at the freshly built binary.
func TestOpsUnitVerifies(t *testing.T) {
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Fatal("systemd-analyze missing: run scripts/deps.sh (Debian package systemd)")
	}
	unit, err := os.ReadFile("../systemd/clawd.service")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Type=notify", "ExecReload=/bin/kill -HUP $MAINPID", "Restart=always",
		"ProtectSystem=strict", "NoNewPrivileges=yes", "ProtectHome=yes", "PrivateTmp=yes",
		"CapabilityBoundingSet=", "RestrictAddressFamilies=", "LimitNOFILE=", "ReadWritePaths="} {
		if !bytes.Contains(unit, []byte(want)) {
			t.Errorf("unit lacks %q", want)
		}
	}
	re := regexp.MustCompile(`(?m)^ExecStart=/usr/local/bin/clawd `)
	if !re.Match(unit) {
		t.Fatal("unit's ExecStart is not /usr/local/bin/clawd")
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "clawd.service")
	if err := os.WriteFile(path, re.ReplaceAll(unit, []byte("ExecStart="+clawdBin(t)+" ")), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(sa, "verify", path).CombinedOutput()
	// Other units installed on the host may draw warnings; ours may not.
	var ours []string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.Contains(l, "clawd.service") {
			ours = append(ours, l)
		}
	}
	if err != nil || len(ours) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// TestOpsK8sAutoAttachPodContainers: a Kubernetes pod as the CRI leaves it
// in containerd's k8s.io namespace — a sandbox with the pod label
// clawd.dev/attach=true and an app container carrying only the kubelet's
// labels, sharing the sandbox's network namespace, which has no route out
// (lo only). Each one's very first process makes a request: it can only
// reach the upstream if clawd attached it before the process ran.
func TestOpsK8sAutoAttachPodContainers(t *testing.T) {
	ctd := harness.SharedContainerd(t)
	up := harness.SharedUpstream(t)
	c := StartClawd(t, ctd, ClawdOpts{})
	// Only for its network namespace (lo only), which the pod shares.
	holder := ctd.Run(t, "ops-podnet", harness.RunOpts{Network: "none"})
	up.Reset()

	uid := "ops-uid-" + strings.TrimPrefix(holder.Name, "ops-podnet-")
	runK8s(t, ctd, "ops-sandbox-"+uid, holder.Netns, map[string]string{
		"io.cri-containerd.kind": "sandbox", "io.kubernetes.pod.uid": uid,
		"io.kubernetes.pod.name": "agent", "clawd.dev/attach": "true",
	}, upURL("/k8s-sandbox-first"))
	runK8s(t, ctd, "ops-app-"+uid, holder.Netns, map[string]string{
		"io.cri-containerd.kind": "container", "io.kubernetes.pod.uid": uid,
		"io.kubernetes.container.name": "agent",
	}, upURL("/k8s-app-first"))
	// An app container of another, unlabelled pod stays unattached.
	runK8s(t, ctd, "ops-other-"+uid, holder.Netns, map[string]string{
		"io.cri-containerd.kind": "container", "io.kubernetes.pod.uid": uid + "-other",
	}, upURL("/k8s-other-first"))

	eventually(t, "both pod containers' first requests at the upstream", func() bool {
		return len(seenFrom(up, "/k8s-sandbox-first")) == 1 && len(seenFrom(up, "/k8s-app-first")) == 1
	})
	for _, p := range []string{"/k8s-sandbox-first", "/k8s-app-first"} {
		if got := seenFrom(up, p); !hostSide(got[0]) {
			t.Errorf("%s came from %v, not through clawd", p, got)
		}
	}
	names := map[string]bool{}
	for _, a := range c.List() {
		names[a.Container.Name] = true
		if a.Container.Namespace == "k8s.io" && !a.Auto {
			t.Errorf("%s attached, but not by label", a.Container.Name)
		}
	}
	if !names["ops-sandbox-"+uid] || !names["ops-app-"+uid] {
		t.Errorf("clawd ls shows %v, want the sandbox and the app container", names)
	}
	if names["ops-other-"+uid] {
		t.Error("the unlabelled pod's container was attached")
	}
	if got := seenFrom(up, "/k8s-other-first"); len(got) != 0 {
		t.Errorf("unattached container in a netns without route reached the upstream: %v", got)
	}
}

// runK8s runs a busybox container in containerd namespace k8s.io whose init
// process fetches url once, then sleeps.
func runK8s(t *testing.T, ctd *harness.Containerd, id, netnsPath string, labels map[string]string, url string) {
	t.Helper()
	cl := ctd.Client()
	ctx, cancel := context.WithTimeout(namespaces.WithNamespace(context.Background(), "k8s.io"), time.Minute)
	defer cancel()
	script := "timeout 10 wget -q -O /dev/null '" + url + "'; echo wget exit $?; exec sleep 3600"
	cctr, err := cl.NewContainer(ctx, id, containerd.WithContainerLabels(labels), containerd.WithNewSpec(
		oci.WithRootFSPath(harness.BusyboxRootfs(t)),
		oci.WithRootFSReadonly(),
		oci.WithProcessArgs("sh", "-c", script),
		oci.WithDefaultPathEnv,
		oci.WithMounts([]specs.Mount{{Destination: "/tmp", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "nodev"}}}),
		oci.WithLinuxNamespace(specs.LinuxNamespace{Type: specs.NetworkNamespace, Path: netnsPath}),
	))
	if err != nil {
		t.Fatalf("create %s: %v", id, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(namespaces.WithNamespace(context.Background(), "k8s.io"), 30*time.Second)
		defer cancel()
		if task, err := cctr.Task(ctx, nil); err == nil {
			task.Kill(ctx, syscall.SIGKILL)
			if ch, err := task.Wait(ctx); err == nil {
				select {
				case <-ch:
				case <-ctx.Done():
				}
			}
			task.Delete(ctx, containerd.WithProcessKill)
		}
		cctr.Delete(ctx)
	})
	logPath := filepath.Join(t.TempDir(), id+".log")
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("%s output: %s", id, b)
		}
	})
	task, err := cctr.NewTask(ctx, cio.LogFile(logPath))
	if err != nil {
		t.Fatalf("task %s: %v", id, err)
	}
	if err := task.Start(ctx); err != nil {
		t.Fatalf("start %s: %v", id, err)
	}
}

// k8sDoc is the subset of a manifest the checks below look at.
type k8sDoc struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   struct {
		Name      string            `yaml:"name"`
		Namespace string            `yaml:"namespace"`
		Labels    map[string]string `yaml:"labels"`
	} `yaml:"metadata"`
	Data map[string]string `yaml:"data"`
	Spec struct {
		Selector struct {
			MatchLabels map[string]string `yaml:"matchLabels"`
		} `yaml:"selector"`
		Template struct {
			Metadata struct {
				Labels map[string]string `yaml:"labels"`
			} `yaml:"metadata"`
			Spec struct {
				HostPID            bool   `yaml:"hostPID"`
				HostNetwork        bool   `yaml:"hostNetwork"`
				ServiceAccountName string `yaml:"serviceAccountName"`
				Containers         []struct {
					Name            string   `yaml:"name"`
					Command         []string `yaml:"command"`
					SecurityContext struct {
						Privileged   *bool `yaml:"privileged"`
						Capabilities struct {
							Add  []string `yaml:"add"`
							Drop []string `yaml:"drop"`
						} `yaml:"capabilities"`
					} `yaml:"securityContext"`
					VolumeMounts []struct {
						Name      string `yaml:"name"`
						MountPath string `yaml:"mountPath"`
						SubPath   string `yaml:"subPath"`
					} `yaml:"volumeMounts"`
				} `yaml:"containers"`
				Volumes []struct {
					Name     string `yaml:"name"`
					HostPath *struct {
						Path string `yaml:"path"`
					} `yaml:"hostPath"`
					ConfigMap *struct {
						Name string `yaml:"name"`
					} `yaml:"configMap"`
				} `yaml:"volumes"`
			} `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

// TestOpsK8sManifests decodes every document under deploy/kubernetes and
// checks what clawd needs on a node.
func TestOpsK8sManifests(t *testing.T) {
	files, _ := filepath.Glob("../deploy/kubernetes/*.yaml")
	if len(files) == 0 {
		t.Fatal("no manifests in deploy/kubernetes")
	}
	byKind := map[string][]k8sDoc{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(b))
		dec.KnownFields(false)
		for i := 0; ; i++ {
			var d k8sDoc
			err := dec.Decode(&d)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s document %d: %v", f, i, err)
			}
			if d.Kind == "" || d.APIVersion == "" {
				t.Fatalf("%s document %d has no kind/apiVersion", f, i)
			}
			byKind[d.Kind] = append(byKind[d.Kind], d)
		}
	}
	for _, k := range []string{"Namespace", "ServiceAccount", "ConfigMap", "DaemonSet"} {
		if len(byKind[k]) == 0 {
			t.Errorf("no %s", k)
		}
	}
	if len(byKind["DaemonSet"]) != 1 {
		t.Fatalf("want one DaemonSet, have %d", len(byKind["DaemonSet"]))
	}
	ds := byKind["DaemonSet"][0]
	ns := byKind["Namespace"][0].Metadata.Name
	sel, tmpl := ds.Spec.Selector.MatchLabels, ds.Spec.Template.Metadata.Labels
	if len(sel) == 0 {
		t.Error("DaemonSet has no selector")
	}
	for k, v := range sel {
		if tmpl[k] != v {
			t.Errorf("selector %s=%s does not match the pod template labels %v", k, v, tmpl)
		}
	}
	ps := ds.Spec.Template.Spec
	if !ps.HostPID || !ps.HostNetwork {
		t.Errorf("hostPID=%v hostNetwork=%v, want both", ps.HostPID, ps.HostNetwork)
	}
	if ds.Metadata.Namespace != ns || ps.ServiceAccountName != byKind["ServiceAccount"][0].Metadata.Name {
		t.Error("DaemonSet not in the namespace or not using the service account")
	}
	if len(ps.Containers) != 1 {
		t.Fatalf("want one container, have %d", len(ps.Containers))
	}
	ctr := ps.Containers[0]
	sc := ctr.SecurityContext
	if sc.Privileged != nil && *sc.Privileged {
		t.Error("clawd should not need a privileged container")
	}
	if !slices.Contains(sc.Capabilities.Drop, "ALL") {
		t.Error("capabilities: drop ALL first")
	}
	for _, c := range []string{"BPF", "NET_ADMIN", "SYS_ADMIN", "SYS_PTRACE"} {
		if !slices.Contains(sc.Capabilities.Add, c) {
			t.Errorf("capability %s missing", c)
		}
	}
	if !slices.Contains(ctr.Command, "--cgroup=/proc/1/ns/cgroup") {
		t.Error("clawd must run in the host's cgroup namespace")
	}
	hostPaths := map[string]string{}
	configMaps := map[string]string{}
	for _, v := range ps.Volumes {
		if v.HostPath != nil {
			hostPaths[v.Name] = v.HostPath.Path
		}
		if v.ConfigMap != nil {
			configMaps[v.Name] = v.ConfigMap.Name
		}
	}
	mounts := map[string]string{} // mountPath -> host path or configmap
	for _, m := range ctr.VolumeMounts {
		if hp, ok := hostPaths[m.Name]; ok {
			mounts[m.MountPath] = hp
		} else if cm, ok := configMaps[m.Name]; ok {
			mounts[m.MountPath] = "configmap:" + cm
			if strings.Contains(m.MountPath, "policy") && m.SubPath != "" {
				t.Error("the policy ConfigMap is mounted with subPath: it would never hot reload")
			}
		}
	}
	for mp, hp := range map[string]string{
		"/sys/fs/bpf": "/sys/fs/bpf", "/sys/fs/cgroup": "/sys/fs/cgroup",
		"/run/containerd/containerd.sock": "/run/containerd/containerd.sock", "/var/lib/clawd": "/var/lib/clawd",
	} {
		if mounts[mp] != hp {
			t.Errorf("mount %s: have %q, want host path %s", mp, mounts[mp], hp)
		}
	}
	// The daemon config from the ConfigMap: k8s.io, no Docker, policy in
	// the directory-mounted policy ConfigMap.
	var cfgText, policyText string
	for _, cm := range byKind["ConfigMap"] {
		if s, ok := cm.Data["clawd.yaml"]; ok {
			cfgText = s
		}
		if s, ok := cm.Data["policy.yaml"]; ok {
			policyText = s
		}
	}
	var cfg struct {
		Namespaces []string `yaml:"namespaces"`
		DockerHost *string  `yaml:"docker-host"`
		Policy     string   `yaml:"policy"`
	}
	if err := yaml.Unmarshal([]byte(cfgText), &cfg); err != nil {
		t.Fatalf("clawd.yaml in the ConfigMap: %v", err)
	}
	if !slices.Equal(cfg.Namespaces, []string{"k8s.io"}) || cfg.DockerHost == nil || *cfg.DockerHost != "" {
		t.Errorf("clawd.yaml: namespaces %v docker-host %v, want [k8s.io] and empty", cfg.Namespaces, cfg.DockerHost)
	}
	if !strings.HasPrefix(mounts[filepath.Dir(cfg.Policy)], "configmap:") {
		t.Errorf("policy %s is not in a directory-mounted ConfigMap (mounts %v)", cfg.Policy, mounts)
	}
	// The policy must be one clawd accepts.
	pf := filepath.Join(t.TempDir(), "policy.yaml")
	os.WriteFile(pf, []byte(policyText), 0o600)
	if out, err := exec.Command(clawdBin(t), "policy", "check", pf).CombinedOutput(); err != nil {
		t.Errorf("policy in the ConfigMap: %v\n%s", err, out)
	}
}

// TestOpsInstallIdempotentUninstall installs into a temporary root twice
// (an operator's policy edit survives), runs the installed daemon with a
// container attached, then uninstalls: the container is detached (it reaches
// the upstream directly again, not cut off), the daemon stopped, every file
// and pin removed.
func TestOpsInstallIdempotentUninstall(t *testing.T) {
	ctd := harness.SharedContainerd(t)
	up := harness.SharedUpstream(t)
	ct := ctd.Run(t, "ops-install", harness.RunOpts{})
	root := t.TempDir()
	os.Chmod(root, 0o755)
	pins := "/sys/fs/bpf/clawd-ops-" + filepath.Base(root)
	t.Cleanup(func() { os.RemoveAll(pins) })
	install := func(args ...string) string {
		t.Helper()
		cmd := exec.Command("bash", append([]string{"../scripts/install.sh"}, args...)...)
		cmd.Env = append(os.Environ(), "CLAWD_ROOT="+root, "CLAWD_PIN_ROOT="+pins, "CLAWD_BIN_SRC="+clawdBin(t))
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("install.sh %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	p := func(rel string) string { return filepath.Join(root, rel) }

	out := install()
	if !strings.Contains(out, "Next steps") {
		t.Errorf("no next steps printed:\n%s", out)
	}
	for _, f := range []string{"usr/local/bin/clawd", "etc/systemd/system/clawd.service", "etc/clawd/clawd.yaml",
		"etc/clawd/policy.yaml", "var/lib/clawd/secrets.key"} {
		if _, err := os.Stat(p(f)); err != nil {
			t.Errorf("not installed: %v", err)
		}
	}
	edited := allowAll + "# edited by the operator\n"
	if err := os.WriteFile(p("etc/clawd/policy.yaml"), []byte(edited), 0o600); err != nil {
		t.Fatal(err)
	}
	key1, _ := os.ReadFile(p("var/lib/clawd/secrets.key"))
	install() // again: idempotent
	if b, _ := os.ReadFile(p("etc/clawd/policy.yaml")); string(b) != edited {
		t.Errorf("second install overwrote the operator's policy:\n%s", b)
	}
	if key2, _ := os.ReadFile(p("var/lib/clawd/secrets.key")); !bytes.Equal(key1, key2) || len(key1) == 0 {
		t.Error("second install replaced the secret-store key")
	}

	// The installed daemon, with the installed layout under root.
	sock := p("run/clawd/clawd.sock")
	daemonCmd := exec.Command(p("usr/local/bin/clawd"), "daemon", "--config", p("etc/clawd/clawd.yaml"),
		"--socket", sock, "--state-dir", p("var/lib/clawd"), "--policy", p("etc/clawd/policy.yaml"),
		"--containerd-address", ctd.Address, "--namespaces", "default", "--docker-host", "unix://"+p("no-docker.sock"),
		"--pin-root", pins, "--api-listen", freePort(t), "--metrics-listen", "", "--audit-log", p("var/log/clawd/audit.log"),
		"--dns-upstreams", harness.UpstreamDNS.String()+":53")
	logf, err := os.Create(filepath.Join(t.TempDir(), "daemon.log"))
	if err != nil {
		t.Fatal(err)
	}
	daemonCmd.Stdout, daemonCmd.Stderr = logf, logf
	if err := daemonCmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { daemonCmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		daemonCmd.Process.Kill()
		<-exited
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("daemon log:\n%s", tail(string(b), 4000))
		}
	})
	cl := daemon.NewClient(sock)
	eventually(t, "the installed daemon answers", func() bool {
		_, err := cl.Status(context.Background())
		return err == nil
	})
	cli := func(args ...string) string {
		out, err := exec.Command(p("usr/local/bin/clawd"), append([]string{"--socket", sock}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("clawd %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	cli("attach", ct.Name)
	up.Reset()
	if out, code := wget(t, ct, upURL("/ops-installed")); code != 0 {
		t.Fatalf("request through the installed daemon failed: %s", out)
	}
	if got := seenFrom(up, "/ops-installed"); len(got) != 1 || !hostSide(got[0]) {
		t.Fatalf("upstream saw %v, want one request through clawd", got)
	}

	out = install("--uninstall")
	if !strings.Contains(out, "detached") || !strings.Contains(out, "clawd uninstalled") {
		t.Errorf("uninstall output:\n%s", out)
	}
	select {
	case <-exited:
	case <-time.After(30 * time.Second):
		t.Fatal("the installed daemon still runs after --uninstall")
	}
	for _, f := range []string{"usr/local/bin/clawd", "etc/systemd/system/clawd.service", "etc/clawd", "var/lib/clawd", "run/clawd", "var/log/clawd", pins} {
		if !filepath.IsAbs(f) {
			f = p(f)
		}
		if _, err := os.Stat(f); !os.IsNotExist(err) {
			t.Errorf("%s left after uninstall (%v)", f, err)
		}
	}
	// Detached, not cut off: the container reaches the upstream itself.
	up.Reset()
	if out, code := wget(t, ct, upURL("/ops-uninstalled")); code != 0 {
		t.Fatalf("container cut off after uninstall: %s", out)
	}
	if got := seenFrom(up, "/ops-uninstalled"); len(got) != 1 || got[0] != ct.IPv4.String() {
		t.Fatalf("after uninstall the upstream saw %v, want the container's own %s", got, ct.IPv4)
	}
}

// TestOpsConfigMapPolicySwap lays the policy out as the kubelet mounts a
// ConfigMap (policy.yaml -> ..data/policy.yaml, ..data -> ..<timestamp>)
// and updates it the kubelet's way (new timestamped dir, atomic rename of
// the ..data symlink): the daemon reloads without a signal.
func TestOpsConfigMapPolicySwap(t *testing.T) {
	ctd := harness.SharedContainerd(t)
	up := harness.SharedUpstream(t)
	ct := ctd.Run(t, "ops-cm", harness.RunOpts{})
	c := StartClawd(t, ctd, ClawdOpts{})
	c.Stop()

	dir := filepath.Dir(c.Policy)
	write := func(stamp, policy string) {
		t.Helper()
		d := filepath.Join(dir, stamp)
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "policy.yaml"), []byte(policy), 0o644); err != nil {
			t.Fatal(err)
		}
		tmp := filepath.Join(dir, "..data_tmp")
		if err := os.Symlink(stamp, tmp); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
			t.Fatal(err)
		}
	}
	os.Remove(c.Policy)
	write("..2026_11_25_01", allowAll)
	if err := os.Symlink("..data/policy.yaml", c.Policy); err != nil {
		t.Fatal(err)
	}
	c.Start()
	c.MustCLI("attach", ct.Name)
	up.Reset()
	if out, code := wget(t, ct, upURL("/cm-allowed")); code != 0 {
		t.Fatalf("allowed by the first ConfigMap version, but: %s", out)
	}

	denyAll := "version: 1\ndefault:\n  default_action: deny\n  rules: []\n"
	write("..2026_11_25_02", denyAll)
	os.RemoveAll(filepath.Join(dir, "..2026_11_25_01"))
	n := 0
	eventually(t, "the swapped ConfigMap policy denies", func() bool {
		n++
		out, code := wget(t, ct, upURL(fmt.Sprintf("/cm-denied-%d", n)))
		return code != 0 && strings.Contains(out, "403")
	})
	if st, err := c.Client().Status(context.Background()); err != nil || st.PolicyError != "" {
		t.Fatalf("status after swap: %+v %v", st, err)
	}
}
