// Package channels builds the approval channels clawd.yaml lists, by type:
// the one place that knows every channel package. Each entry is a map with
// the common keys type, name (default: the type) and approvers (the
// channel's own approvers: user IDs on it), plus the channel's settings,
// which its package decodes strictly.
package channels

import (
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strings"

	"github.com/clawd-dev/clawd/approval"
	"github.com/clawd-dev/clawd/approval/discord"
	"github.com/clawd-dev/clawd/approval/email"
	"github.com/clawd-dev/clawd/approval/gchat"
	"github.com/clawd-dev/clawd/approval/github"
	"github.com/clawd-dev/clawd/approval/linear"
	"github.com/clawd-dev/clawd/approval/mattermost"
	"github.com/clawd-dev/clawd/approval/ntfy"
	"github.com/clawd-dev/clawd/approval/slack"
	"github.com/clawd-dev/clawd/approval/teams"
	"github.com/clawd-dev/clawd/approval/telegram"
	"github.com/clawd-dev/clawd/approval/webex"
	"github.com/clawd-dev/clawd/approval/webhook"
	"github.com/clawd-dev/clawd/approval/whatsapp"
	"github.com/clawd-dev/clawd/policy"
)

// Builder makes one channel from its settings (without the common keys).
type Builder func(name string, settings map[string]any, env approval.Env) (approval.Channel, error)

// builders by type; a new channel package adds one line here.
var builders = map[string]Builder{
	webhook.Type:    webhook.Build,
	slack.Type:      slack.Build,
	teams.Type:      teams.Build,
	ntfy.Type:       ntfy.Build,
	telegram.Type:   telegram.Build,
	discord.Type:    discord.Build,
	gchat.Type:      gchat.Build,
	whatsapp.Type:   whatsapp.Build,
	webex.Type:      webex.Build,
	email.Type:      email.Build,
	mattermost.Type: mattermost.Build,
	github.Type:     github.Build,
	linear.Type:     linear.Build,
}

// caseless are the types whose user IDs compare without case (e-mail
// addresses, GitHub logins): approvers are written lowercased.
var caseless = map[string]bool{email.Type: true, github.Type: true}

// Types lists the channel types this clawd can build.
func Types() []string {
	out := make([]string, 0, len(builders))
	for t := range builders {
		out = append(out, t)
	}
	sort.Strings(out)
	return out
}

// Built is the result of Build: the channels and each one's own approvers.
type Built struct {
	Channels  []approval.Channel
	Approvers map[string][]string
	// Platforms maps each channel's name to its type (approval.Config.Platforms).
	Platforms map[string]string
	types     []string // of each channel
}

// Build makes every channel of specs. envFor gives each channel its Env
// (a state directory of its own). Errors name the entry and never contain
// a credential.
func Build(specs []map[string]any, envFor func(name string) (approval.Env, error)) (*Built, error) {
	b := &Built{Approvers: map[string][]string{}, Platforms: map[string]string{}}
	seen := map[string]bool{approval.ChannelCLI: true, approval.ChannelAPI: true, approval.ChannelLink: true}
	for i, raw := range specs {
		settings := make(map[string]any, len(raw))
		for k, v := range raw {
			settings[strings.ToLower(k)] = v
		}
		typ, _ := settings["type"].(string)
		delete(settings, "type")
		build, ok := builders[typ]
		if !ok {
			return nil, fmt.Errorf("approval.channels[%d]: type %q is not a channel type (known: %s)", i, typ, strings.Join(Types(), ", "))
		}
		name := typ
		if v, ok := settings["name"]; ok {
			s, _ := v.(string)
			if !validName(s) {
				return nil, fmt.Errorf("approval.channels[%d]: name %v: use letters, digits, '-', '_' and '.' only", i, v)
			}
			name = s
		}
		delete(settings, "name")
		if seen[name] {
			return nil, fmt.Errorf("approval.channels[%d]: channel name %q is used twice or reserved (cli, api, link); give it another name:", i, name)
		}
		seen[name] = true
		var people []string
		if v, ok := settings["approvers"]; ok {
			list, ok := v.([]any)
			if !ok {
				return nil, fmt.Errorf("approval.channels[%d] (%s): approvers must be a list of user IDs", i, name)
			}
			for _, p := range list {
				s := strings.TrimSpace(fmt.Sprint(p))
				if s == "" || strings.ContainsAny(s, " \t,") {
					return nil, fmt.Errorf("approval.channels[%d] (%s): approvers: %q is not a user ID", i, name, s)
				}
				if caseless[typ] {
					s = strings.ToLower(s)
				}
				people = append(people, s)
			}
		}
		delete(settings, "approvers")
		env, err := envFor(name)
		if err != nil {
			return nil, fmt.Errorf("approval channel %s: %w", name, err)
		}
		ch, err := build(name, settings, env)
		if err != nil {
			return nil, fmt.Errorf("approval channel %s (%s): %w", name, typ, err)
		}
		if d, ok := ch.(interface{ DefaultApprovers() []string }); ok && people == nil {
			// Channels whose settings name their people (ntfy topics).
			people = d.DefaultApprovers()
		}
		slices.Sort(people)
		b.Channels = append(b.Channels, ch)
		b.types = append(b.types, typ)
		b.Platforms[name] = typ
		b.Approvers[name] = slices.Compact(people)
	}
	return b, nil
}

func validName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// legacyPaths are callback paths kept for configurations written before
// channels had their own (by type).
var legacyPaths = map[string][]string{
	slack.Type: {slack.LegacyPath},
}

// Mounts are the callback handlers of the channels that take HTTP
// callbacks, by path pattern, for the public listener. Each verifies its
// platform's authentication itself before calling d.
func (b *Built) Mounts(d approval.Decider) map[string]http.Handler {
	out := map[string]http.Handler{}
	for i, c := range b.Channels {
		cb, ok := c.(approval.Callbacks)
		if !ok {
			continue
		}
		h := cb.Callbacks(d)
		if h == nil {
			continue // callbacks not configured for this channel (no signing secret, …)
		}
		out[approval.CallbackPath(c.Name())] = h
		for _, p := range legacyPaths[b.types[i]] {
			if _, taken := out[p]; !taken {
				out[p] = h
			}
		}
	}
	return out
}

// Listeners are the channels that open their own connection for clicks.
func (b *Built) Listeners() []approval.Listener {
	var out []approval.Listener
	for _, c := range b.Channels {
		if l, ok := c.(approval.Listener); ok {
			out = append(out, l)
		}
	}
	return out
}

// Directory is what policy.CheckRoutes needs to know about the channels:
// their names and own approvers, plus the built-in cli and link.
func Directory(specs []map[string]any) policy.Directory {
	dir := policy.Directory{approval.ChannelCLI: {Open: true}, approval.ChannelLink: {Open: true}}
	for _, raw := range specs {
		name, _ := raw["name"].(string)
		if name == "" {
			name, _ = raw["type"].(string)
		}
		var people []string
		if list, ok := raw["approvers"].([]any); ok {
			for _, p := range list {
				people = append(people, fmt.Sprint(p))
			}
		} else if rcpts, ok := raw["recipients"].([]any); ok {
			for _, r := range rcpts { // e-mail: the recipients are the approvers
				people = append(people, strings.ToLower(fmt.Sprint(r)))
			}
		} else if topics, ok := raw["topics"].(map[string]any); ok {
			for who := range topics { // ntfy: one topic per approver
				people = append(people, who)
			}
		}
		typ, _ := raw["type"].(string)
		info := policy.ChannelInfo{People: people}
		switch typ {
		case webhook.Type:
			info.NoClicks = true // decisions come back through signed links
		case slack.Type:
			_, socket := raw["app-token"]
			_, signed := raw["signing-secret"]
			info.NoClicks = !socket && !signed
		case ntfy.Type, email.Type:
			// Only people with a topic (ntfy) or an address on the list
			// (e-mail) can ever be reached.
			info.Listed = true
			if _, ok := raw["approvers"]; !ok {
				info.People = people
			}
		}
		if caseless[typ] {
			for i, p := range info.People {
				info.People[i] = strings.ToLower(p)
			}
		}
		dir[name] = info
	}
	return dir
}
