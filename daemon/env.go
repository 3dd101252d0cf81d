package daemon

import (
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/clawd-dev/clawd/proxy/ca"
	"github.com/clawd-dev/clawd/secrets"
)

// EnvVar is one variable of an agent's environment.
type EnvVar = ca.EnvVar

// EnvFormats are the output formats of `clawd env`.
var EnvFormats = []string{"env-file", "shell", "k8s"}

// AgentEnv is everything an agent's environment needs: the placeholders of
// the secrets (secrets.EnvLines: CLAWD_SECRET_<NAME> and the variables the
// presets' SDKs read) and the variables pointing every runtime at the CA
// files --trust-ca writes (ca.TrustEnv). It holds no secret value.
func AgentEnv(list []secrets.Secret) []EnvVar {
	var out []EnvVar
	for _, l := range secrets.EnvLines(list) {
		k, v, _ := strings.Cut(l, "=")
		out = append(out, EnvVar{Name: k, Value: v})
	}
	return append(out, ca.TrustEnv()...)
}

// FormatEnv writes vars as `docker run --env-file` lines (env-file), as
// POSIX shell exports (shell) or as a Kubernetes container env list (k8s).
func FormatEnv(w io.Writer, vars []EnvVar, format string) error {
	var b strings.Builder
	switch format {
	case "", "env-file":
		for _, v := range vars {
			fmt.Fprintf(&b, "%s=%s\n", v.Name, v.Value)
		}
	case "shell":
		for _, v := range vars {
			fmt.Fprintf(&b, "export %s=%s\n", v.Name, shellQuote(v.Value))
		}
	case "k8s":
		b.WriteString("env:\n")
		for _, v := range vars {
			// A JSON string is a YAML double-quoted scalar.
			fmt.Fprintf(&b, "  - name: %s\n    value: %s\n", v.Name, strconv.Quote(v.Value))
		}
	default:
		return fmt.Errorf("unknown format %q (want %s)", format, strings.Join(EnvFormats, ", "))
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
