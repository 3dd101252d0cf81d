// Command clawd is the clawd daemon and its command-line client. It only
// parses flags and calls packages; the logic lives in daemon/, policy/,
// secrets/ and approval/.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/term"

	"github.com/clawd-dev/clawd/approval"
	approvalapi "github.com/clawd-dev/clawd/approval/api"
	"github.com/clawd-dev/clawd/approval/channels"
	"github.com/clawd-dev/clawd/audit"
	"github.com/clawd-dev/clawd/daemon"
	"github.com/clawd-dev/clawd/policy"
	"github.com/clawd-dev/clawd/policy/suggest"
	"github.com/clawd-dev/clawd/secrets"
)

func main() {
	if err := root().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "clawd:", err)
		os.Exit(1)
	}
}

var socket string

func client() *daemon.Client { return daemon.NewClient(socket) }

func ctx() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

func root() *cobra.Command {
	c := &cobra.Command{
		Use:           "clawd",
		Short:         "Isolate AI agent containers: kernel-enforced egress, policy, approvals and secret injection",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	c.PersistentFlags().StringVar(&socket, "socket", envOr("CLAWD_SOCKET", daemon.DefaultSocket), "control socket of the daemon")
	c.AddCommand(daemonCmd(), attachCmd(), detachCmd(), envCmd(), lsCmd(), statusCmd(), doctorCmd(), versionCmd(), auditCmd(),
		policyCmd(), caCmd(), webhookCertCmd(), secretCmd(), approvalsCmd(), approveCmd(), denyCmd(), grantsCmd())
	c.AddCommand(fleetCmd()) // issue 17
	return c
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func daemonCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "daemon",
		Short: "Run the clawd daemon (root)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := daemon.LoadConfig(cmd.Flags())
			if err != nil {
				return err
			}
			log, err := daemon.NewLogger(cfg.LogLevel, cfg.LogFormat)
			if err != nil {
				return err
			}
			defer log.Sync()
			d, err := daemon.New(cfg, log)
			if err != nil {
				return err
			}
			ctx, stop := ctx()
			defer stop()
			go daemon.HandleHUP(ctx, d, log)
			return d.Run(ctx)
		},
	}
	daemon.Flags(c.Flags())
	// The daemon's --socket is its own flag (viper-bound), not the client's.
	return c
}

func attachCmd() *cobra.Command {
	var req daemon.AttachRequest
	var env bool
	var secretsFile, secretsKey, format string
	c := &cobra.Command{
		Use:   "attach <container>",
		Short: "Attach a containerd or Docker container (by name, ID or unique ID prefix) or a process (--pid)",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 1 {
				req.Container = args[0]
			}
			if req.Container == "" && req.PID == 0 {
				return fmt.Errorf("name a container, or give --pid")
			}
			ctx, cancel := ctx()
			defer cancel()
			r, err := client().Attach(ctx, req)
			if err != nil {
				return err
			}
			fmt.Printf("attached %s (%s", r.Container.Name, r.Container.Runtime)
			if r.Container.Namespace != "" {
				fmt.Printf(", namespace %s", r.Container.Namespace)
			}
			fmt.Printf(")\ncgroup: %s\nlayers: cgroup=%d hooks, tcx=%v, tcx-peers=%v, tcx-lower=%v\n", r.Cgroup, len(r.Layers.Cgroup), r.Layers.TCX, r.Layers.TCXPeers, r.Layers.TCXLower)
			for _, i := range r.Layers.Interfaces {
				if i.Covered {
					fmt.Printf("interface %s (%s): covered (%s): %s\n", i.Name, i.Kind, i.Via, i.How)
				} else {
					fmt.Printf("interface %s (%s): NOT covered: %s (attached all the same: no packet socket can use it, the BPF LSM layer refusing them or no process of the container able to hold CAP_NET_RAW)\n", i.Name, i.Kind, i.Why)
				}
			}
			if env {
				return printEnv(os.Stdout, secretsFile, secretsKey, format)
			}
			return nil
		},
	}
	c.Flags().StringVar(&req.Namespace, "namespace", "", "containerd namespace (default: search default, moby, k8s.io)")
	c.Flags().IntVar(&req.PID, "pid", 0, "attach the cgroup of this process instead of a named container")
	c.Flags().BoolVar(&req.TrustCA, "trust-ca", false, "make the container's runtimes trust clawd's CA (system bundles, clawd-ca.pem, certifi, Java)")
	c.Flags().BoolVar(&env, "env", false, "print the agent's environment (placeholders and CA variables), as `clawd env` does")
	c.Flags().StringVar(&format, "format", "env-file", "with --env: "+strings.Join(daemon.EnvFormats, ", "))
	secretFlags(c, &secretsFile, &secretsKey)
	return c
}

func printEnv(w io.Writer, file, key, format string) error {
	st, err := secrets.Open(file, key)
	if err != nil {
		return err
	}
	defer st.Close()
	return daemon.FormatEnv(w, daemon.AgentEnv(st.List()), format)
}

func envCmd() *cobra.Command {
	var secretsFile, secretsKey, format, ns string
	c := &cobra.Command{
		Use:   "env [container]",
		Short: "Print the agent's environment: secret placeholders and the variables that make every runtime trust clawd's CA",
		Long: `Print everything an agent's environment needs: the placeholders of the stored
secrets (never their values) and NODE_EXTRA_CA_CERTS, SSL_CERT_FILE,
REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE, AWS_CA_BUNDLE, DENO_CERT and GIT_SSL_CAINFO
pointing at the files --trust-ca writes into the container.

The output is the same for every container, so it can be given before the
container exists: docker run --env-file <(clawd env) ... With a container
name, clawd also checks that container and warns (on stderr) about what
would still not trust the CA.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var buf strings.Builder
			if err := printEnv(&buf, secretsFile, secretsKey, format); err != nil {
				return err
			}
			if len(args) == 1 {
				ctx, cancel := ctx()
				defer cancel()
				rep, err := client().Inspect(ctx, daemon.InspectRequest{Container: args[0], Namespace: ns})
				if err != nil {
					return err
				}
				for _, r := range rep.Runtimes {
					if !r.Trusts && r.Fix != "" {
						fmt.Fprintf(os.Stderr, "clawd env: %s: %s %s: %s (fix: %s)\n", rep.Container, r.Runtime, r.Path, r.Info, r.Fix)
					}
				}
			}
			fmt.Print(buf.String())
			return nil
		},
	}
	c.Flags().StringVar(&format, "format", "env-file", "output format: "+strings.Join(daemon.EnvFormats, ", ")+" (docker run --env-file lines, shell exports, Kubernetes env list)")
	c.Flags().StringVar(&ns, "namespace", "", "containerd namespace of the container")
	secretFlags(c, &secretsFile, &secretsKey)
	return c
}

func detachCmd() *cobra.Command {
	var ns string
	c := &cobra.Command{
		Use:   "detach <container>",
		Short: "Detach a container: its traffic is no longer redirected",
		Args:  cobra.ExactArgs(1),
		RunE: withCtx(func(ctx context.Context, args []string) error {
			r, err := client().Detach(ctx, args[0], ns)
			if err != nil {
				return err
			}
			fmt.Printf("detached %s\n", r.Container.Name)
			return nil
		}),
	}
	c.Flags().StringVar(&ns, "namespace", "", "containerd namespace (default: any)")
	return c
}

func lsCmd() *cobra.Command {
	var out string
	c := &cobra.Command{
		Use:   "ls",
		Short: "List attached containers with their kernel counters",
		Args:  cobra.NoArgs,
		RunE: withCtx(func(ctx context.Context, _ []string) error {
			list, err := client().List(ctx)
			if err != nil {
				return err
			}
			switch out {
			case "json":
				return printJSON(list)
			case "", "table":
				return daemon.FormatList(os.Stdout, list, time.Now())
			}
			return fmt.Errorf("unknown output format %q (table or json)", out)
		}),
	}
	c.Flags().StringVarP(&out, "output", "o", "table", "output format: table or json")
	return c
}

func statusCmd() *cobra.Command {
	var out string
	c := &cobra.Command{
		Use:   "status",
		Short: "Show the daemon's status, policy and reload errors",
		Args:  cobra.NoArgs,
		RunE: withCtx(func(ctx context.Context, _ []string) error {
			s, err := client().Status(ctx)
			if err != nil {
				return err
			}
			if out == "json" {
				return printJSON(s)
			}
			daemon.FormatStatus(os.Stdout, s)
			return nil
		}),
	}
	c.Flags().StringVarP(&out, "output", "o", "table", "output format: table or json")
	return c
}

func doctorCmd() *cobra.Command {
	var container, ns string
	var cfgFlags = &cobra.Command{}
	daemon.Flags(cfgFlags.Flags())
	c := &cobra.Command{
		Use:   "doctor",
		Short: "Check this host for everything clawd needs and say what to fix",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := daemon.LoadConfig(cmd.Flags())
			if err != nil {
				return err
			}
			ctx, cancel := ctx()
			defer cancel()
			checks := daemon.Doctor(ctx, cfg)
			bad := daemon.FormatChecks(os.Stdout, checks)
			if container != "" {
				rep, err := daemon.NewClient(cfg.Socket).Inspect(ctx, daemon.InspectRequest{Container: container, Namespace: ns})
				if err != nil {
					return fmt.Errorf("--container %s: %w", container, err)
				}
				state := "not attached"
				if rep.Attached {
					state = "attached"
				}
				fmt.Printf("\ncontainer %s (%s, pid %d, %s): does each runtime trust clawd's CA?\n", rep.Container, rep.Runtime, rep.PID, state)
				bad += daemon.FormatChecks(os.Stdout, daemon.RuntimeChecks(rep))
			}
			if bad > 0 {
				return fmt.Errorf("%d check(s) failed", bad)
			}
			return nil
		},
	}
	c.Flags().AddFlagSet(cfgFlags.Flags())
	c.Flags().StringVar(&container, "container", "", "also report which runtimes this container holds and whether each will trust clawd's CA")
	c.Flags().StringVar(&ns, "namespace", "", "with --container: its containerd namespace")
	return c
}

func auditCmd() *cobra.Command {
	c := &cobra.Command{Use: "audit", Short: "Check the tamper-evident audit log"}
	var key, headArg string
	verify := &cobra.Command{
		Use:   "verify FILE",
		Short: "Verify an audit log's hash chain and signed checkpoints; point at the first altered line",
		Long: "Verify checks that every line of FILE (\"-\": standard input) follows the one before it in the hash chain and, with\n" +
			"--key, that every checkpoint is signed by that key. It exits non-zero at the first altered, deleted, inserted or moved\n" +
			"line, and says how many lines after the last signed checkpoint only the chain vouches for.",
		Args:          cobra.ExactArgs(1),
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			if !cmd.Flags().Changed("key") {
				if _, err := os.Stat(key); err != nil {
					// Whoever rewrote the log may have removed the key too.
					return fmt.Errorf("no public key at %s (%v): give --key FILE (the daemon's audit-key.pub), or --key '' to check the chain only, which whoever can write the log can recompute", key, errors.Unwrap(err))
				}
			}
			if key == "" {
				fmt.Fprintln(os.Stderr, "note: --key '': signatures NOT checked, the chain only")
			}
			var want audit.Head
			if headArg != "" {
				var err error
				if want, err = audit.ParseHead(headArg); err != nil {
					return fmt.Errorf("--head: %w", err)
				}
			} else if want = daemonHead(args[0]); want.Seq > 0 {
				fmt.Fprintf(os.Stderr, "note: checking the running daemon's audit chain head (seq %d) is in %s\n", want.Seq, args[0])
			}
			rep, err := audit.VerifyFile(args[0], key, want)
			if err != nil {
				return err
			}
			rep.Write(os.Stdout, args[0], key != "")
			if !rep.OK() {
				return errors.New("audit log verification failed")
			}
			return nil
		},
	}
	verify.Flags().StringVar(&key, "key", daemon.DefaultStateDir+"/audit-key.pub", "public key of the checkpoints (the daemon's AUDIT-KEY.pub); empty: check the chain only")
	verify.Flags().StringVar(&headArg, "head", "", "SEQ:SHA256 of a line that must be in FILE (clawd status: audit chain head); default: the running daemon's head when FILE is its audit log")
	c.AddCommand(verify)
	return c
}

// daemonHead is the running daemon's audit chain head if path is its
// audit log (none otherwise, or if no daemon answers).
func daemonHead(path string) audit.Head {
	c, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	s, err := client().Status(c)
	if err != nil || s.AuditSeq <= 0 || s.AuditLog == "" {
		return audit.Head{}
	}
	a, err1 := os.Stat(path)
	b, err2 := os.Stat(s.AuditLog)
	if err1 != nil || err2 != nil || !os.SameFile(a, b) {
		return audit.Head{}
	}
	return audit.Head{Seq: s.AuditSeq, Hash: s.AuditHead}
}

func versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print clawd's version",
		Args:  cobra.NoArgs,
		Run:   func(*cobra.Command, []string) { fmt.Println("clawd", daemon.Version) },
	}
}

func policyCmd() *cobra.Command {
	c := &cobra.Command{Use: "policy", Short: "Validate, test, reload and suggest policies"}
	c.AddCommand(policyCheckCmd(), policySuggestCmd())
	var ctr policy.Container
	var labels []string
	var progPath, progSum string
	test := &cobra.Command{
		Use:   "test FILE --container NAME [--program PATH [--program-sha256 HEX]] METHOD URL",
		Short: "Print the decision a policy makes for one request, and the rule that made it",
		Args:  cobra.ExactArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := policy.Load(args[0])
			if err != nil {
				return err
			}
			c := ctr
			if c.ID == "" {
				c.ID = c.Name
			}
			c.Labels = map[string]string{}
			for _, l := range labels {
				k, v, ok := strings.Cut(l, "=")
				if !ok {
					return fmt.Errorf("--label %q: want KEY=VALUE", l)
				}
				c.Labels[k] = v
			}
			prog, err := policy.ProgramFor(progPath, progSum)
			if err != nil {
				return err
			}
			d, err := policy.ExplainProgram(p, c, prog, strings.ToUpper(args[1]), args[2])
			if err != nil {
				return err
			}
			fmt.Println(policy.FormatDecision(d))
			return nil
		},
	}
	test.Flags().StringVar(&ctr.Name, "container", "", "container name the request comes from")
	test.Flags().StringVar(&ctr.Runtime, "runtime", "containerd", "container runtime")
	test.Flags().StringVar(&ctr.Namespace, "namespace", "default", "containerd namespace")
	test.Flags().StringSliceVar(&labels, "label", nil, "container label KEY=VALUE (repeatable)")
	test.Flags().StringVar(&progPath, "program", "", "the program making the request, as the container sees it (default: unknown, which no allow rule with binaries matches)")
	test.Flags().StringVar(&progSum, "program-sha256", "", "the program's SHA-256 (sha256sum)")
	test.MarkFlagRequired("container")
	c.AddCommand(test)
	c.AddCommand(&cobra.Command{
		Use:   "reload",
		Short: "Ask the daemon to re-read its policy file now",
		Args:  cobra.NoArgs,
		RunE: withCtx(func(ctx context.Context, _ []string) error {
			if err := client().ReloadPolicy(ctx); err != nil {
				return err
			}
			fmt.Println("policy reloaded")
			return nil
		}),
	})
	return c
}

func caCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "ca",
		Short: "Print clawd's interception CA certificate (PEM)",
		Args:  cobra.NoArgs,
		RunE: withCtx(func(ctx context.Context, _ []string) error {
			pem, err := client().CA(ctx)
			if err != nil {
				return err
			}
			os.Stdout.Write(pem)
			return nil
		}),
	}
}

func webhookCertCmd() *cobra.Command {
	var dir, service, namespace string
	var validity time.Duration
	c := &cobra.Command{
		Use:   "webhook-cert --dir DIR",
		Short: "Make the TLS files of the Kubernetes admission webhook (for deploy/kubernetes/webhook)",
		Long: `Write a CA and a serving certificate for the webhook Service into DIR:
tls.crt and tls.key (the Secret clawd-webhook-tls the DaemonSet mounts),
ca.crt, and ca-bundle.yaml (the kustomize patch that puts the CA into the
MutatingWebhookConfiguration's caBundle). Then: kubectl apply -k deploy/kubernetes/webhook`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			certs, err := daemon.WebhookCerts(service, namespace, validity)
			if err != nil {
				return err
			}
			if err := os.MkdirAll(dir, 0o700); err != nil {
				return err
			}
			for name, f := range map[string]struct {
				data []byte
				mode os.FileMode
			}{
				"tls.crt": {certs.Cert, 0o644}, "tls.key": {certs.Key, 0o600}, "ca.crt": {certs.CA, 0o644},
				"ca-bundle.yaml": {daemon.WebhookCABundlePatch(certs.CA), 0o644},
			} {
				if err := os.WriteFile(filepath.Join(dir, name), f.data, f.mode); err != nil {
					return err
				}
			}
			fmt.Printf("wrote %s/{tls.crt,tls.key,ca.crt,ca-bundle.yaml} for %s.%s.svc, valid %s\n", dir, service, namespace, validity)
			return nil
		},
	}
	c.Flags().StringVar(&dir, "dir", "deploy/kubernetes/webhook/tls", "output directory")
	c.Flags().StringVar(&service, "service", "clawd-webhook", "the webhook's Service")
	c.Flags().StringVar(&namespace, "namespace", "clawd-system", "the Service's namespace")
	c.Flags().DurationVar(&validity, "valid", 2*365*24*time.Hour, "how long the certificates are valid")
	return c
}

func secretFlags(c *cobra.Command, file, key *string) {
	c.Flags().StringVar(file, "secrets-file", envOr("CLAWD_SECRETS_FILE", daemon.DefaultStateDir+"/secrets.json"), "encrypted secret store")
	c.Flags().StringVar(key, "secrets-key", envOr("CLAWD_SECRETS_KEY", daemon.DefaultStateDir+"/secrets.key"), "secret store key file")
}

func secretCmd() *cobra.Command {
	var file, key string
	c := &cobra.Command{Use: "secret", Short: "Manage the secrets clawd injects in place of placeholders"}
	c.PersistentFlags().StringVar(&file, "secrets-file", envOr("CLAWD_SECRETS_FILE", daemon.DefaultStateDir+"/secrets.json"), "encrypted secret store")
	c.PersistentFlags().StringVar(&key, "secrets-key", envOr("CLAWD_SECRETS_KEY", daemon.DefaultStateDir+"/secrets.key"), "secret store key file")

	var spec secrets.Secret
	set := &cobra.Command{
		Use:   "set NAME (--host HOST [--host ...] | --preset P | --clawd)",
		Short: "Create or replace a secret; the value is read from stdin, never from arguments",
		Args:  cobra.ExactArgs(1),
		PreRunE: func(*cobra.Command, []string) error {
			if len(spec.Hosts) == 0 && spec.Preset == "" && !spec.Clawd {
				return fmt.Errorf("--host is required (or --preset, which brings its own host, or --clawd for a credential of clawd itself)")
			}
			return nil
		},
		RunE: withStore(&file, &key, func(st *secrets.Store, args []string) error {
			if term.IsTerminal(int(os.Stdin.Fd())) {
				fmt.Fprint(os.Stderr, "value (end with Enter): ")
			}
			v, err := secrets.ReadValue(os.Stdin)
			if err != nil {
				return err
			}
			defer clear(v)
			s := spec
			s.Name = args[0]
			out, err := st.Set(s, v)
			if err != nil {
				return err
			}
			if out.Clawd {
				fmt.Printf("secret %s set for clawd itself (never injected into agents' requests)\n", out.Name)
				return nil
			}
			fmt.Printf("secret %s set for %s\nplaceholder: %s\n", out.Name, strings.Join(out.Hosts, ", "), out.Placeholder)
			return nil
		}),
	}
	set.Flags().StringSliceVar(&spec.Hosts, "host", nil, "host the secret may be sent to (repeatable; *.example.com for subdomains)")
	set.Flags().StringVar(&spec.Header, "header", "", "header that carries the secret (e.g. Authorization)")
	set.Flags().StringVar(&spec.Format, "format", "", "header value with {value} where the secret goes (e.g. 'Bearer {value}')")
	set.Flags().StringVar(&spec.Preset, "preset", "", "provider preset: "+strings.Join(secrets.Presets(), ", "))
	set.Flags().BoolVar(&spec.HeaderMode, "header-mode", false, "always set --header, even when the agent sent none")
	set.Flags().StringSliceVar(&spec.Paths, "path", nil, "limit the secret to these path patterns (repeatable)")
	set.Flags().StringVar(&spec.PathTemplate, "path-template", "", "put the value into the path, e.g. '/bot{value}/**'")
	set.Flags().StringVar(&spec.PathRegex, "path-regex", "", "regex with one group replaced by the value in the path")
	set.Flags().BoolVar(&spec.Body, "body", false, "also replace the placeholder in request bodies")
	set.Flags().BoolVar(&spec.Query, "query", false, "also replace the placeholder in the query string")
	set.Flags().StringSliceVar(&spec.RemoveHeaders, "remove-header", nil, "headers to delete from requests in header mode (repeatable)")
	set.Flags().StringSliceVar(&spec.Env, "env", nil, "extra environment variable names for `clawd attach --env` (repeatable)")
	set.Flags().BoolVar(&spec.Clawd, "clawd", false, "a credential for clawd itself (upstream proxy user:password, approval channel token): never injected, no hosts or placeholder")
	c.AddCommand(set)
	c.AddCommand(&cobra.Command{
		Use:   "ls",
		Short: "List secrets (names, hosts, placeholders; never values)",
		Args:  cobra.NoArgs,
		RunE: withStore(&file, &key, func(st *secrets.Store, _ []string) error {
			return secrets.FormatTable(os.Stdout, st.List())
		}),
	})
	c.AddCommand(&cobra.Command{
		Use:   "rm NAME",
		Short: "Remove a secret",
		Args:  cobra.ExactArgs(1),
		RunE: withStore(&file, &key, func(st *secrets.Store, args []string) error {
			if err := st.Remove(args[0]); err != nil {
				return err
			}
			fmt.Printf("secret %s removed\n", args[0])
			return nil
		}),
	})
	c.AddCommand(&cobra.Command{
		Use:   "rotate NAME",
		Short: "Replace a secret's value (read from stdin); the placeholder stays",
		Args:  cobra.ExactArgs(1),
		RunE: withStore(&file, &key, func(st *secrets.Store, args []string) error {
			v, err := secrets.ReadValue(os.Stdin)
			if err != nil {
				return err
			}
			defer clear(v)
			if _, err := st.Rotate(args[0], v); err != nil {
				return err
			}
			fmt.Printf("secret %s rotated\n", args[0])
			return nil
		}),
	})
	return c
}

func approvalClient() *approvalapi.Client {
	return &approvalapi.Client{HTTP: client().HTTP, Base: daemon.BaseURL}
}

func approvalsCmd() *cobra.Command {
	var container, out string
	var fleetWide bool
	c := &cobra.Command{
		Use:   "approvals",
		Short: "List held requests waiting for a decision",
		Args:  cobra.NoArgs,
		RunE: withCtx(func(ctx context.Context, _ []string) error {
			if fleetWide { // issue 17
				return fleetApprovals(ctx, container, out)
			}
			list, err := approvalClient().List(ctx, container)
			if err != nil {
				return err
			}
			if out == "json" {
				return printJSON(list)
			}
			return approvalapi.FormatTable(os.Stdout, list, time.Now())
		}),
	}
	c.PersistentFlags().StringVar(&container, "container", "", "only this container")
	c.Flags().StringVarP(&out, "output", "o", "table", "output format: table or json")
	c.Flags().BoolVar(&fleetWide, "fleet", false, "every host's held requests (fleet database), by holding host")
	c.AddCommand(&cobra.Command{
		Use:   "watch",
		Short: "Show held requests as they come and go",
		Args:  cobra.NoArgs,
		RunE: withCtx(func(ctx context.Context, _ []string) error {
			return approvalClient().WatchContainer(ctx, container, func(list []approval.Approval) {
				fmt.Printf("--- %s\n", time.Now().Format(time.TimeOnly))
				approvalapi.FormatTable(os.Stdout, list, time.Now())
			})
		}),
	})
	return c
}

func approveCmd() *cobra.Command {
	var dur time.Duration
	c := &cobra.Command{
		Use:   "approve ID",
		Short: "Approve a held request (once, or --for a duration as a grant)",
		Args:  cobra.ExactArgs(1),
		RunE: withCtx(func(ctx context.Context, args []string) error {
			a, err := approvalClient().Approve(ctx, args[0], dur)
			if err != nil {
				return err
			}
			if a.Status == approval.Pending {
				fmt.Printf("approval recorded for %s (%d of %d): %s %s\n", a.ID, len(a.Votes), a.Required, a.Method, a.URL)
				return nil
			}
			fmt.Printf("approved %s: %s %s\n", a.ID, a.Method, a.URL)
			return nil
		}),
	}
	c.Flags().DurationVar(&dur, "for", 0, "also let matching requests through for this long (e.g. 15m)")
	return c
}

func denyCmd() *cobra.Command {
	var reason string
	c := &cobra.Command{
		Use:   "deny ID",
		Short: "Deny a held request",
		Args:  cobra.ExactArgs(1),
		RunE: withCtx(func(ctx context.Context, args []string) error {
			a, err := approvalClient().Deny(ctx, args[0], reason)
			if err != nil {
				return err
			}
			fmt.Printf("denied %s: %s %s\n", a.ID, a.Method, a.URL)
			return nil
		}),
	}
	c.Flags().StringVar(&reason, "reason", "", "reason shown to the agent")
	return c
}

func grantsCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "grants",
		Short: "List active grants (approvals for a duration)",
		Args:  cobra.NoArgs,
		RunE: withCtx(func(ctx context.Context, _ []string) error {
			gs, err := approvalClient().Grants(ctx)
			if err != nil {
				return err
			}
			return approvalapi.FormatGrants(os.Stdout, gs, time.Now())
		}),
	}
	c.AddCommand(&cobra.Command{
		Use:   "revoke ID",
		Short: "End a grant now",
		Args:  cobra.ExactArgs(1),
		RunE: withCtx(func(ctx context.Context, args []string) error {
			if err := approvalClient().RevokeGrant(ctx, args[0]); err != nil {
				return err
			}
			fmt.Printf("grant %s revoked\n", args[0])
			return nil
		}),
	})
	return c
}

// withCtx runs fn with a context cancelled on SIGINT/SIGTERM.
func withCtx(fn func(ctx context.Context, args []string) error) func(*cobra.Command, []string) error {
	return func(_ *cobra.Command, args []string) error {
		c, cancel := ctx()
		defer cancel()
		return fn(c, args)
	}
}

// withStore runs fn with the secret store opened from the flags.
func withStore(file, key *string, fn func(st *secrets.Store, args []string) error) func(*cobra.Command, []string) error {
	return func(_ *cobra.Command, args []string) error {
		st, err := secrets.Open(*file, *key)
		if err != nil {
			return err
		}
		defer st.Close()
		return fn(st, args)
	}
}

func printJSON(v any) error {
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// policySuggestCmd proposes a policy from the audit log (policy/suggest).
func policySuggestCmd() *cobra.Command {
	var config, auditFile, since, container, current string
	var diff bool
	c := &cobra.Command{
		Use:   "suggest [--since 24h] [--container NAME] [--diff]",
		Short: "Propose a policy that allows what the audit log saw (reads allowed, writes held for approval)",
		Long: "Reads the audit log (the daemon config's audit-log and its rotated copies, or --audit FILE) and prints a\n" +
			"policy that would allow what was seen: reads (GET, HEAD, OPTIONS) grouped per host, writes as approve\n" +
			"rules. Names and addresses that are special (loopback, link-local and metadata, private, the host's) are\n" +
			"never proposed, nor what the author's own deny or approve rules decided, nor requests whose path is not\n" +
			"plain (counted on stderr). With --diff only rules for what fell to a set's default action are printed,\n" +
			"to be appended AFTER the set's rules (first match wins, so explicit denies and approvals keep winning).\n" +
			"The output passes `clawd policy check`.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			d, err := suggest.ParseSince(since)
			if err != nil {
				return err
			}
			cfg, err := daemonConfig(cmd, config)
			if err != nil {
				return err
			}
			if auditFile == "" {
				auditFile = cfg.AuditLog
			}
			o := suggest.Options{Since: time.Now().Add(-d), Container: container}
			if diff {
				if current == "" {
					current = cfg.Policy
				}
				if o.Current, err = policy.Load(current); err != nil {
					return err
				}
			}
			res, col, err := suggest.FromLog(auditFile, o)
			if err != nil {
				return err
			}
			fmt.Fprintf(os.Stderr, "clawd: %d audit lines read, %d decisions used, %d unreadable, %d rules proposed\n", col.Lines, col.Used, col.Bad, res.Rules)
			if col.ByRule > 0 {
				fmt.Fprintf(os.Stderr, "clawd: %d requests your own deny or approve rules decided were left out (only what the default action refused is proposed)\n", col.ByRule)
			}
			if col.Unplain > 0 {
				fmt.Fprintf(os.Stderr, "clawd: %d requests with a path that is not plain were left out (no rule is widened for them)\n", col.Unplain)
			}
			if col.Dropped > 0 {
				fmt.Fprintf(os.Stderr, "clawd: %d observations over a container's limit were dropped; use --container or --since to read less\n", col.Dropped)
			}
			for _, s := range res.Skipped {
				fmt.Fprintln(os.Stderr, "clawd: not proposed:", s)
			}
			if res.YAML == nil {
				fmt.Fprintln(os.Stderr, "clawd: nothing to propose")
				return nil
			}
			_, err = os.Stdout.Write(res.YAML)
			return err
		},
	}
	c.Flags().StringVar(&config, "config", daemon.DefaultConfig, "daemon config that names the audit log and the policy")
	c.Flags().StringVar(&auditFile, "audit", "", "audit log to read (default: the config's audit-log), with its rotated copies")
	c.Flags().StringVar(&since, "since", "24h", "how far back to read: a duration (24h, 90m) or days (7d)")
	c.Flags().StringVar(&container, "container", "", "only this container's requests")
	c.Flags().BoolVar(&diff, "diff", false, "print only rules for what the current policy left to a default action, to append after its rules")
	c.Flags().StringVar(&current, "policy", "", "the current policy for --diff (default: the config's policy)")
	return c
}

// policyCheckCmd validates a policy file, and its approval routes against
// the channels the daemon config (--config) lists.
func policyCheckCmd() *cobra.Command {
	var config string
	c := &cobra.Command{
		Use:   "check FILE",
		Short: "Validate a policy file (errors carry line numbers), and its approval routes against the channels of --config",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := policy.Load(args[0])
			if err != nil {
				return err
			}
			cfg, err := daemonConfig(cmd, config)
			if err != nil {
				return err
			}
			if err := p.CheckRoutes(channels.Directory(cfg.Approval.ChannelSpecs()), nil); err != nil {
				return err
			}
			fmt.Printf("%s: ok\n", args[0])
			return nil
		},
	}
	c.Flags().StringVar(&config, "config", daemon.DefaultConfig, "daemon config whose approval channels the routes are checked against (missing is fine unless set explicitly)")
	return c
}

// daemonConfig loads the daemon's configuration as the daemon would (its
// defaults, clawd.yaml), from --config when the command was given one.
func daemonConfig(cmd *cobra.Command, config string) (daemon.Config, error) {
	fs := pflag.NewFlagSet("daemon", pflag.ContinueOnError)
	daemon.Flags(fs)
	if cmd.Flags().Changed("config") {
		if err := fs.Set("config", config); err != nil {
			return daemon.Config{}, err
		}
	}
	return daemon.LoadConfig(fs)
}
