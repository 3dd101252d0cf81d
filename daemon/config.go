package daemon

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/clawd-dev/clawd/audit"
	"github.com/clawd-dev/clawd/proxy/dns"
	"github.com/spf13/viper"
)

// Config is the daemon's own settings (the policy is a separate file). They
// come from --config (YAML), flags, and CLAWD_* environment variables, in
// increasing precedence for env over file and flags over both.
type Config struct {
	Socket            string   `mapstructure:"socket"`
	StateDir          string   `mapstructure:"state-dir"`
	Policy            string   `mapstructure:"policy"`
	ContainerdAddress string   `mapstructure:"containerd-address"`
	Namespaces        []string `mapstructure:"namespaces"`
	DockerHost        string   `mapstructure:"docker-host"`
	PinRoot           string   `mapstructure:"pin-root"`
	APIListen         string   `mapstructure:"api-listen"`
	MetricsListen     string   `mapstructure:"metrics-listen"`
	AuditLog          string   `mapstructure:"audit-log"`
	LogLevel          string   `mapstructure:"log-level"`
	LogFormat         string   `mapstructure:"log-format"` // "json", "console" or "" (json unless on a terminal)
	DNSUpstreams      []string `mapstructure:"dns-upstreams"`
	Pprof             bool     `mapstructure:"pprof"` // Go profiles on the metrics listener
	// FastPath lets connections a rule set allows by address and port
	// alone pass in the kernel instead of the proxy (issue 18,
	// daemon/fastpath.go); false: every connection goes to the proxy.
	FastPath         bool           `mapstructure:"fast-path"`
	DNSRefuse        string         `mapstructure:"dns-refuse"`         // "nxdomain" or "refused": the answer for names the policy never allows
	DNSAuditInterval time.Duration  `mapstructure:"dns-audit-interval"` // how often aggregated DNS audit lines are written
	UpstreamCAFile   string         `mapstructure:"upstream-ca-file"`   // extra roots for upstream TLS (tests, private CAs)
	SecretsFile      string         `mapstructure:"secrets-file"`
	SecretsKey       string         `mapstructure:"secrets-key"`
	DrainTimeout     time.Duration  `mapstructure:"drain-timeout"`
	SweepInterval    time.Duration  `mapstructure:"sweep-interval"`
	PeekTimeout      time.Duration  `mapstructure:"peek-timeout"`
	APIToken         string         `mapstructure:"api-token"`  // bearer token of the host approval API; generated into the state dir if empty
	PublicURL        string         `mapstructure:"public-url"` // base of signed approve/deny links
	Approval         ApprovalConfig `mapstructure:"approval"`

	// WebhookListen, when set, serves the Kubernetes mutating admission
	// webhook (daemon/admission) over TLS with WebhookCert/WebhookKey.
	WebhookListen string `mapstructure:"webhook-listen"`
	WebhookCert   string `mapstructure:"webhook-cert"`
	WebhookKey    string `mapstructure:"webhook-key"`

	// MaxConnsPerContainer bounds one attachment's open proxied connections (0 = unlimited).
	MaxConnsPerContainer int `mapstructure:"max-conns-per-container"`
	// MaxBufferedBytes and MaxBufferedBytesPerContainer bound the request
	// bodies held in memory (approval holds, body conditions, decoding), in
	// total and per container: sizes such as "256MiB" or plain bytes, 0 =
	// unlimited. See Config.bufferBudgets.
	MaxBufferedBytes             string `mapstructure:"max-buffered-bytes"`
	MaxBufferedBytesPerContainer string `mapstructure:"max-buffered-bytes-per-container"`
	// MaxProgramHashBytes is the largest executable clawd hashes to tell
	// which program connected (policy binaries:); a larger one makes the
	// program unknown. A size as above; never 0 (hashing unbounded files
	// would let an agent make clawd read without end).
	MaxProgramHashBytes string `mapstructure:"max-program-hash-bytes"`

	// Tamper-evident audit log and its export (auditx). AuditKey signs the
	// log's checkpoints (generated, 0600; its public key beside it as
	// .pub), every AuditCheckpointEvery lines and every
	// AuditCheckpointInterval (0: only by count, at rotation and on
	// shutdown). AuditOTLP, from the config file's audit-otlp section
	// only, exports every line over OTLP (nil: no export).
	AuditKey                string           `mapstructure:"audit-key"`
	AuditCheckpointEvery    int              `mapstructure:"audit-checkpoint-every"`
	AuditCheckpointInterval time.Duration    `mapstructure:"audit-checkpoint-interval"`
	AuditOTLP               *AuditOTLPConfig `mapstructure:"-"`

	// Fleet joins this host to other clawd hosts through PostgreSQL
	// (issue 17, docs/fleet.md); unset = single host, as before.
	Fleet FleetConfig `mapstructure:"fleet"`
}

// ApprovalConfig configures where held requests are shown and decided.
type ApprovalConfig struct {
	// Channels are the approval channels, each a map with type, name
	// (default: the type), approvers (its own user IDs) and the settings
	// of its type (approval/<type>/README.md); see approval/channels.
	Channels []map[string]any `mapstructure:"channels"`
	// Webhooks and Slack are the settings of clawd before channels; each
	// becomes a channel (webhook-1, …; slack).
	Webhooks               []WebhookConfig `mapstructure:"webhooks"`
	Slack                  SlackConfig     `mapstructure:"slack"`
	MaxPending             int             `mapstructure:"max-pending"`
	MaxPendingPerContainer int             `mapstructure:"max-pending-per-container"`
}

type WebhookConfig struct {
	URL    string `mapstructure:"url"`
	Secret string `mapstructure:"secret"` // whsec_...
}

type SlackConfig struct {
	WebhookURL    string   `mapstructure:"webhook-url"`
	BotToken      string   `mapstructure:"bot-token"`
	Channel       string   `mapstructure:"channel"`
	APIBase       string   `mapstructure:"api-base"`
	SigningSecret string   `mapstructure:"signing-secret"`
	Approvers     []string `mapstructure:"approvers"`
	// Groups maps Slack user-group IDs (S...) listed in Approvers to their
	// member user IDs; clawd does not look groups up over the network.
	Groups map[string][]string `mapstructure:"groups"`
}

// Defaults, also shown in --help.
const (
	DefaultConfig      = "/etc/clawd/clawd.yaml"
	DefaultSocket      = "/run/clawd/clawd.sock"
	DefaultStateDir    = "/var/lib/clawd"
	DefaultPolicy      = "/etc/clawd/policy.yaml"
	DefaultContainerd  = "/run/containerd/containerd.sock"
	DefaultDockerHost  = "unix:///var/run/docker.sock"
	DefaultPinRoot     = "/sys/fs/bpf/clawd"
	DefaultAPIListen   = "127.0.0.1:8787"
	DefaultMetrics     = "127.0.0.1:9787"
	DefaultWebhookCert = "/etc/clawd/webhook-tls/tls.crt"
	DefaultWebhookKey  = "/etc/clawd/webhook-tls/tls.key"
	// Memory budgets of buffered request bodies: 16 held bodies of the
	// largest size (MaxHoldBody, 16 MiB) in total, 4 per container.
	DefaultMaxBufferedBytes             = "256MiB"
	DefaultMaxProgramHashBytes          = "512MiB"
	DefaultMaxBufferedBytesPerContainer = "64MiB"
)

// Flags registers the daemon's flags on fs.
func Flags(fs *pflag.FlagSet) {
	fs.String("config", DefaultConfig, "daemon config file (YAML); missing is fine unless set explicitly")
	fs.String("socket", DefaultSocket, "control socket (mode 0600)")
	fs.String("state-dir", DefaultStateDir, "state directory")
	fs.String("policy", DefaultPolicy, "policy file")
	fs.String("containerd-address", DefaultContainerd, "containerd socket")
	fs.StringSlice("namespaces", []string{"default", "moby", "k8s.io"}, "containerd namespaces to search and watch")
	fs.String("docker-host", DefaultDockerHost, "Docker Engine API address")
	fs.String("pin-root", DefaultPinRoot, "bpffs directory for pinned links and maps")
	fs.String("api-listen", DefaultAPIListen, "host address of the approval API")
	fs.String("metrics-listen", DefaultMetrics, "host address of the Prometheus metrics listener (empty disables)")
	fs.String("audit-log", "", "audit log file (default STATE-DIR/audit.log)")
	fs.String("audit-key", "", "Ed25519 key that signs the audit log's checkpoints (default STATE-DIR/audit-key; generated; public key in KEY.pub)")
	fs.Int("audit-checkpoint-every", 1000, "write a signed audit checkpoint after this many lines")
	fs.Duration("audit-checkpoint-interval", time.Minute, "write a signed audit checkpoint this often while lines arrive (0: only by count, at rotation and on shutdown)")
	fs.String("log-level", "info", "log level: debug, info, warn, error")
	fs.String("log-format", "", "log format: json or console (default json unless stderr is a terminal)")
	fs.StringSlice("dns-upstreams", nil, "resolvers for agents' DNS (default: the host's /etc/resolv.conf)")
	fs.Bool("fast-path", true, "pass connections that the policy allows by address and port alone (cidrs, ports; nothing else) in the kernel instead of the proxy; they are audited with path \"kernel\"")
	fs.Bool("pprof", false, "serve Go profiles under /debug/pprof/ on the metrics listener")
	fs.String("dns-refuse", "nxdomain", "answer for names the policy can never allow: nxdomain or refused")
	fs.Duration("dns-audit-interval", time.Minute, "how often the aggregated audit lines of forwarded DNS queries and left-out answer addresses are written")
	fs.String("upstream-ca-file", "", "extra CA certificates trusted for upstream TLS")
	fs.String("secrets-file", "", "encrypted secret store (default STATE-DIR/secrets.json)")
	fs.String("secrets-key", "", "secret store key file (default STATE-DIR/secrets.key)")
	fs.Duration("drain-timeout", 10*time.Second, "how long in-flight connections may finish on shutdown")
	fs.Duration("sweep-interval", 30*time.Second, "how often attachments of vanished containers are cleaned up")
	fs.Duration("peek-timeout", time.Second, "how long to wait for a client's first bytes before treating a connection as raw TCP")
	fs.Int("max-conns-per-container", DefaultMaxConnsPerContainer, "open proxied connections one attached container may have at once (0 = unlimited)")
	fs.String("max-buffered-bytes", DefaultMaxBufferedBytes, "request-body bytes all containers together may have buffered in memory (held for approval, read for body rules, decoded); past it 503 + Retry-After (0 = unlimited)")
	fs.String("max-program-hash-bytes", DefaultMaxProgramHashBytes, "the largest executable hashed to tell which program connected (policy binaries:); a larger one is an unknown program")
	fs.String("max-buffered-bytes-per-container", DefaultMaxBufferedBytesPerContainer, "the same bound for each container (0 = unlimited)")
	fs.String("api-token", "", "bearer token for the approval API (default: generated in STATE-DIR/api-token)")
	fs.String("public-url", "", "base URL of signed approval links (default http://API-LISTEN)")
	fs.String("webhook-listen", "", "host address of the Kubernetes admission webhook (HTTPS), e.g. 0.0.0.0:9443 (empty disables)")
	fs.String("webhook-cert", DefaultWebhookCert, "the webhook's TLS certificate (re-read when it changes)")
	fs.String("webhook-key", DefaultWebhookKey, "the webhook's TLS key")
}

// LoadConfig reads the settings from fs, the config file and the environment.
func LoadConfig(fs *pflag.FlagSet) (Config, error) {
	v := viper.New()
	v.SetEnvPrefix("CLAWD")
	v.SetEnvKeyReplacer(strings.NewReplacer("-", "_", ".", "_"))
	v.AutomaticEnv()
	if err := v.BindPFlags(fs); err != nil {
		return Config{}, fmt.Errorf("bind flags: %w", err)
	}
	for _, k := range fleetKeys {
		v.BindEnv("fleet." + k)
	}
	path := v.GetString("config")
	v.SetConfigFile(path)
	v.SetConfigType("yaml")
	if err := v.ReadInConfig(); err != nil {
		explicit := fs.Changed("config") || os.Getenv("CLAWD_CONFIG") != ""
		if explicit || !errors.Is(err, os.ErrNotExist) {
			return Config{}, fmt.Errorf("read config %s: %w", path, err)
		}
	}
	var c Config
	if err := v.Unmarshal(&c); err != nil {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	var err error
	if c.AuditOTLP, err = parseAuditOTLP(path); err != nil {
		return Config{}, err
	}
	if c.AuditKey == "" {
		c.AuditKey = c.StateDir + "/audit-key"
	}
	if c.AuditLog == "" {
		c.AuditLog = c.StateDir + "/audit.log"
	}
	if c.SecretsFile == "" {
		c.SecretsFile = c.StateDir + "/secrets.json"
	}
	if c.SecretsKey == "" {
		c.SecretsKey = c.StateDir + "/secrets.key"
	}
	return c, c.validate()
}

func (c Config) validate() error {
	for name, v := range map[string]string{"socket": c.Socket, "state-dir": c.StateDir, "policy": c.Policy, "pin-root": c.PinRoot} {
		if v == "" {
			return fmt.Errorf("config: %s must not be empty", name)
		}
	}
	if _, err := c.dnsRcode(); err != nil {
		return err
	}
	if err := c.Fleet.validate(); err != nil {
		return err
	}
	if _, err := netip.ParseAddrPort(c.APIListen); err != nil {
		return fmt.Errorf("config: api-listen %q: %w", c.APIListen, err)
	}
	if c.DNSAuditInterval < 0 {
		return fmt.Errorf("config: dns-audit-interval must not be negative")
	}
	if c.AuditCheckpointEvery < 0 {
		return fmt.Errorf("config: audit-checkpoint-every must not be negative (0: %d)", audit.DefaultCheckpointEvery)
	}
	if c.AuditCheckpointInterval < 0 {
		return fmt.Errorf("config: audit-checkpoint-interval must not be negative")
	}
	if c.MaxConnsPerContainer < 0 {
		return fmt.Errorf("config: max-conns-per-container must not be negative")
	}
	if _, _, err := c.bufferBudgets(); err != nil {
		return err
	}
	if _, err := c.programHashMax(); err != nil {
		return err
	}
	if c.MetricsListen != "" {
		if _, err := netip.ParseAddrPort(c.MetricsListen); err != nil {
			return fmt.Errorf("config: metrics-listen %q: %w", c.MetricsListen, err)
		}
	}
	if c.WebhookListen != "" {
		if _, err := netip.ParseAddrPort(c.WebhookListen); err != nil {
			return fmt.Errorf("config: webhook-listen %q: %w (want ADDRESS:PORT, e.g. 0.0.0.0:9443)", c.WebhookListen, err)
		}
	}
	return nil
}

// dnsRcode maps dns-refuse to the DNS response code clawd answers with.
func (c Config) dnsRcode() (int, error) {
	switch strings.ToLower(c.DNSRefuse) {
	case "", "nxdomain":
		return dns.RcodeNameError, nil
	case "refused":
		return dns.RcodeRefused, nil
	}
	return 0, fmt.Errorf("config: dns-refuse %q: want nxdomain or refused", c.DNSRefuse)
}

// bufferBudgets returns max-buffered-bytes and
// max-buffered-bytes-per-container as proxy.Config takes them: bytes, with
// -1 for unlimited (0 in the config) and the defaults for unset values.
func (c Config) bufferBudgets() (total, perContainer int64, err error) {
	parse := func(key, v, def string) (int64, error) {
		if strings.TrimSpace(v) == "" {
			v = def
		}
		n, err := parseSize(v)
		if err != nil {
			return 0, fmt.Errorf("config: %s %q: %w", key, v, err)
		}
		if n == 0 {
			return -1, nil
		}
		return n, nil
	}
	if total, err = parse("max-buffered-bytes", c.MaxBufferedBytes, DefaultMaxBufferedBytes); err != nil {
		return 0, 0, err
	}
	if perContainer, err = parse("max-buffered-bytes-per-container", c.MaxBufferedBytesPerContainer, DefaultMaxBufferedBytesPerContainer); err != nil {
		return 0, 0, err
	}
	return total, perContainer, nil
}

// programHashMax is MaxProgramHashBytes in bytes.
func (c *Config) programHashMax() (int64, error) {
	v := c.MaxProgramHashBytes
	if strings.TrimSpace(v) == "" {
		v = DefaultMaxProgramHashBytes
	}
	n, err := parseSize(v)
	if err != nil {
		return 0, fmt.Errorf("config: max-program-hash-bytes %q: %w", v, err)
	}
	if n <= 0 {
		return 0, fmt.Errorf("config: max-program-hash-bytes must be positive: clawd reads the whole executable it hashes")
	}
	return n, nil
}

// parseSize parses a byte size: plain bytes ("1048576") or a number with a
// binary unit (KiB, MiB, GiB; K/KB, M/MB, G/GB are read as the same).
func parseSize(s string) (int64, error) {
	s = strings.TrimSpace(s)
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	if i == 0 {
		return 0, errors.New("want a size such as 256MiB or a number of bytes")
	}
	n, err := strconv.ParseInt(s[:i], 10, 64)
	if err != nil {
		return 0, err
	}
	var shift uint
	switch strings.ToLower(strings.TrimSpace(s[i:])) {
	case "", "b":
	case "k", "kb", "kib":
		shift = 10
	case "m", "mb", "mib":
		shift = 20
	case "g", "gb", "gib":
		shift = 30
	default:
		return 0, fmt.Errorf("unknown unit %q (KiB, MiB, GiB)", s[i:])
	}
	if n > (1<<62)>>shift {
		return 0, errors.New("too large")
	}
	return n << shift, nil
}

// ChannelSpecs are the approval channels of the configuration: the
// channels list plus the older webhooks and slack settings as channels.
func (a ApprovalConfig) ChannelSpecs() []map[string]any {
	specs := append([]map[string]any(nil), a.Channels...)
	for i, w := range a.Webhooks {
		specs = append(specs, map[string]any{"type": "webhook", "name": fmt.Sprintf("webhook-%d", i+1), "url": w.URL, "secret": w.Secret})
	}
	if s := a.Slack; s.WebhookURL != "" || s.BotToken != "" {
		m := map[string]any{"type": "slack"}
		for k, v := range map[string]string{"webhook-url": s.WebhookURL, "bot-token": s.BotToken, "channel": s.Channel, "api-base": s.APIBase, "signing-secret": s.SigningSecret} {
			if v != "" {
				m[k] = v
			}
		}
		// Group IDs (S…) were expanded from the static map; channels list people.
		var people []any
		for _, id := range s.Approvers {
			if members, ok := s.Groups[id]; ok {
				for _, u := range members {
					people = append(people, u)
				}
				continue
			}
			people = append(people, id)
		}
		if len(people) > 0 {
			m["approvers"] = people
		}
		specs = append(specs, m)
	}
	return specs
}
