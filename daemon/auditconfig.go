package daemon

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/http/httpguts"
	"gopkg.in/yaml.v3"

	"github.com/clawd-dev/clawd/audit/otlp"
	"github.com/clawd-dev/clawd/internal/privfile"
)

// AuditOTLPConfig is clawd.yaml's audit-otlp section: OTLP export of the
// audit log (audit/otlp). It is read from the config file only (with
// file:line errors), not from flags or the environment.
type AuditOTLPConfig struct {
	Endpoint string
	Protocol string
	// Headers are sent with every export; HeadersFile adds "Name: value"
	// lines from a file (credentials: keep it 0600). Values are never
	// logged or shown.
	Headers     map[string]string
	HeadersFile string
	Insecure    bool
	CAFile      string
	Timeout     time.Duration
	QueueSize   int
	Resource    map[string]string
}

var auditOTLPKeys = []string{"endpoint", "protocol", "headers", "headers-file", "insecure", "ca-file", "timeout", "queue-size", "resource"}

// parseAuditOTLP reads the audit-otlp section of the YAML config file at
// path (nil if the file or the section is missing), strictly: unknown keys,
// wrong types and bad values are errors naming the file and line.
func parseAuditOTLP(path string) (*AuditOTLPConfig, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return parseAuditOTLPBytes(path, b)
}

func parseAuditOTLPBytes(path string, b []byte) (*AuditOTLPConfig, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(doc.Content) == 0 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, nil
	}
	var sec *yaml.Node
	top := doc.Content[0]
	for i := 0; i+1 < len(top.Content); i += 2 {
		if top.Content[i].Value == "audit-otlp" {
			sec = top.Content[i+1]
		}
	}
	if sec == nil || (sec.Kind == yaml.ScalarNode && sec.Tag == "!!null") {
		return nil, nil
	}
	errAt := func(n *yaml.Node, format string, a ...any) error {
		return fmt.Errorf("%s:%d: audit-otlp: %s", path, n.Line, fmt.Sprintf(format, a...))
	}
	if sec.Kind != yaml.MappingNode {
		return nil, errAt(sec, "want a mapping (endpoint, protocol, headers, ...)")
	}
	c := &AuditOTLPConfig{}
	seen := map[string]bool{}
	for i := 0; i+1 < len(sec.Content); i += 2 {
		k, v := sec.Content[i], sec.Content[i+1]
		if !slices.Contains(auditOTLPKeys, k.Value) {
			return nil, errAt(k, "unknown key %q (known: %s)", k.Value, strings.Join(auditOTLPKeys, ", "))
		}
		if seen[k.Value] {
			return nil, errAt(k, "%s given twice", k.Value)
		}
		seen[k.Value] = true
		scalar := func() (string, error) {
			if v.Kind != yaml.ScalarNode {
				return "", errAt(v, "%s: want a single value", k.Value)
			}
			return v.Value, nil
		}
		var err error
		var s string
		switch k.Value {
		case "endpoint":
			c.Endpoint, err = scalar()
		case "protocol":
			if s, err = scalar(); err == nil {
				if s != otlp.ProtocolHTTP && s != otlp.ProtocolGRPC {
					err = errAt(v, "protocol %q: want %s or %s", s, otlp.ProtocolHTTP, otlp.ProtocolGRPC)
				}
				c.Protocol = s
			}
		case "headers":
			c.Headers, err = stringMap(v, errAt, "headers", true)
		case "headers-file":
			c.HeadersFile, err = scalar()
		case "insecure":
			if s, err = scalar(); err == nil {
				if c.Insecure, err = strconv.ParseBool(s); err != nil {
					err = errAt(v, "insecure %q: want true or false", s)
				}
			}
		case "ca-file":
			c.CAFile, err = scalar()
		case "timeout":
			if s, err = scalar(); err == nil {
				if c.Timeout, err = time.ParseDuration(s); err != nil || c.Timeout <= 0 {
					err = errAt(v, "timeout %q: want a positive duration such as 10s", s)
				}
			}
		case "queue-size":
			if s, err = scalar(); err == nil {
				if c.QueueSize, err = strconv.Atoi(s); err != nil || c.QueueSize < 1 || c.QueueSize > 1<<20 {
					err = errAt(v, "queue-size %q: want a number of lines from 1 to 1048576", s)
				}
			}
		case "resource":
			c.Resource, err = stringMap(v, errAt, "resource", false)
		}
		if err != nil {
			return nil, err
		}
	}
	if c.Endpoint == "" {
		return nil, errAt(sec, "endpoint is required (e.g. http://127.0.0.1:4318)")
	}
	if err := otlp.CheckEndpoint(c.Endpoint); err != nil {
		return nil, errAt(sec, "%v", err)
	}
	if c.Protocol != otlp.ProtocolGRPC && !strings.HasPrefix(c.Endpoint, "http://") && !strings.HasPrefix(c.Endpoint, "https://") {
		return nil, errAt(sec, "endpoint %q: want an http:// or https:// URL (or protocol: grpc)", otlp.Redact(c.Endpoint))
	}
	if c.Insecure && c.Protocol != otlp.ProtocolGRPC {
		return nil, errAt(sec, "insecure is for protocol grpc; for http the endpoint's scheme (http:// or https://) decides")
	}
	return c, nil
}

// stringMap reads a mapping of scalars; header names and values are
// checked as HTTP header fields (a value is never quoted in an error).
func stringMap(n *yaml.Node, errAt func(*yaml.Node, string, ...any) error, key string, header bool) (map[string]string, error) {
	if n.Kind != yaml.MappingNode {
		return nil, errAt(n, "%s: want a mapping of names to values", key)
	}
	m := map[string]string{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode || v.Kind != yaml.ScalarNode {
			return nil, errAt(k, "%s: want name: value", key)
		}
		if header && !httpguts.ValidHeaderFieldName(k.Value) {
			return nil, errAt(k, "headers: %q is not a valid header name", k.Value)
		}
		if header && !httpguts.ValidHeaderFieldValue(v.Value) {
			return nil, errAt(v, "headers: the value of %s is not a valid header value", k.Value)
		}
		m[k.Value] = v.Value
	}
	return m, nil
}

// otlpConfig is the exporter's configuration, with the headers file read.
func (c *AuditOTLPConfig) otlpConfig(version, host string) (otlp.Config, error) {
	headers := map[string]string{}
	for k, v := range c.Headers {
		headers[k] = v
	}
	if c.HeadersFile != "" {
		b, err := privfile.Read(c.HeadersFile, privfile.Private, 1<<20)
		if err != nil {
			return otlp.Config{}, fmt.Errorf("audit-otlp headers-file: %w", err)
		}
		sc := bufio.NewScanner(bytes.NewReader(b))
		for n := 1; sc.Scan(); n++ {
			line := strings.TrimSpace(sc.Text())
			if line == "" || strings.HasPrefix(line, "#") {
				continue
			}
			name, value, ok := strings.Cut(line, ":")
			name, value = strings.TrimSpace(name), strings.TrimSpace(value)
			if !ok || !httpguts.ValidHeaderFieldName(name) || !httpguts.ValidHeaderFieldValue(value) {
				return otlp.Config{}, fmt.Errorf("%s:%d: want a header line \"Name: value\"", c.HeadersFile, n)
			}
			headers[name] = value
		}
	}
	return otlp.Config{Endpoint: c.Endpoint, Protocol: c.Protocol, Headers: headers, Insecure: c.Insecure, CAFile: c.CAFile,
		Timeout: c.Timeout, QueueSize: c.QueueSize, Resource: c.Resource, Version: version, HostName: host}, nil
}
