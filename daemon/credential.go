package daemon

import "errors"

// credential is the value of a clawd-owned secret (`clawd secret set NAME
// --clawd`): how approval channels and upstream proxies get their tokens
// from the secret store. Agents' secrets are never returned.
func (d *Daemon) credential(name string) (string, error) {
	c, ok := any(d.secrets).(interface{ Credential(string) (string, error) })
	if !ok {
		return "", errors.New("this secret store cannot hold clawd-owned credentials")
	}
	return c.Credential(name)
}
