package summary

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/clawd-dev/clawd/approval"

	"github.com/clawd-dev/clawd/internal/hostname"
)

// GitHub summarises GitHub REST API calls (api.github.com, or a GitHub
// Enterprise host with the /api/v3 prefix) and git pushes over HTTPS.
type GitHub struct{}

func (GitHub) Summarize(h *approval.Hold) (string, bool) {
	host := hostname.Normalize(h.Host)
	p := splitPath(h.Path)
	method := strings.ToUpper(h.Method)
	// git push: POST https://github.com/o/r.git/git-receive-pack
	if method == "POST" && len(p) == 3 && p[2] == "git-receive-pack" {
		return fmt.Sprintf("Push to %s/%s on %s", p[0], strings.TrimSuffix(p[1], ".git"), host), true
	}
	if host != "api.github.com" {
		if len(p) >= 2 && p[0] == "api" && p[1] == "v3" {
			p = p[2:]
		} else {
			return "", false
		}
	}
	var body map[string]any
	_ = json.Unmarshal(h.Body, &body)
	str := func(k string) string {
		if s, ok := body[k].(string); ok {
			return s
		}
		return ""
	}
	if len(p) < 3 || p[0] != "repos" {
		return "", false
	}
	repo := p[1] + "/" + p[2]
	rest := p[3:]
	at := func(i int) string {
		if i < len(rest) {
			return rest[i]
		}
		return ""
	}
	switch {
	case method == "DELETE" && len(rest) == 0:
		return "Delete repository " + repo, true
	case method == "PATCH" && len(rest) == 0:
		if v, ok := body["private"].(bool); ok && !v {
			return "Make repository " + repo + " public", true
		}
		if v, ok := body["visibility"].(string); ok {
			return "Change visibility of " + repo + " to " + v, true
		}
		if n := str("name"); n != "" {
			return "Rename repository " + repo + " to " + n, true
		}
		return "Change settings of repository " + repo, true
	case method == "PUT" && at(0) == "pulls" && at(2) == "merge" && len(rest) == 3:
		s := fmt.Sprintf("Merge pull request #%s in %s", at(1), repo)
		switch mm := str("merge_method"); mm {
		case "merge", "squash", "rebase":
			s += " (" + mm + ")"
		case "":
		default:
			s += " (unknown merge method)" // agent text never shapes the summary
		}
		return s, true
	case method == "POST" && at(0) == "pulls" && len(rest) == 1:
		return fmt.Sprintf("Open pull request %q (%s → %s) in %s", str("title"), str("head"), str("base"), repo), true
	case method == "POST" && at(0) == "git" && at(1) == "refs" && len(rest) == 2:
		return fmt.Sprintf("Create ref %s in %s", str("ref"), repo), true
	case method == "PATCH" && at(0) == "git" && at(1) == "refs" && len(rest) > 2:
		ref := strings.Join(rest[2:], "/")
		if f, _ := body["force"].(bool); f {
			return fmt.Sprintf("Force-update %s in %s to %s", ref, repo, short(str("sha"))), true
		}
		return fmt.Sprintf("Update %s in %s to %s", ref, repo, short(str("sha"))), true
	case method == "DELETE" && at(0) == "git" && at(1) == "refs" && at(2) == "heads" && len(rest) > 3:
		return fmt.Sprintf("Delete branch %s in %s", strings.Join(rest[3:], "/"), repo), true
	case method == "DELETE" && at(0) == "git" && at(1) == "refs" && at(2) == "tags" && len(rest) > 3:
		return fmt.Sprintf("Delete tag %s in %s", strings.Join(rest[3:], "/"), repo), true
	case method == "DELETE" && at(0) == "git" && at(1) == "refs" && len(rest) > 2:
		return fmt.Sprintf("Delete ref %s in %s", strings.Join(rest[2:], "/"), repo), true
	case method == "DELETE" && at(0) == "branches" && at(2) == "protection":
		return fmt.Sprintf("Remove branch protection of %s in %s", at(1), repo), true
	case method == "POST" && at(0) == "releases" && len(rest) == 1:
		return fmt.Sprintf("Create release %s in %s", str("tag_name"), repo), true
	case method == "DELETE" && at(0) == "releases":
		return "Delete a release in " + repo, true
	case method == "PUT" && at(0) == "contents" && len(rest) > 1:
		return fmt.Sprintf("Commit %s to %s: %q", strings.Join(rest[1:], "/"), repo, str("message")), true
	case method == "DELETE" && at(0) == "contents" && len(rest) > 1:
		return fmt.Sprintf("Delete file %s in %s", strings.Join(rest[1:], "/"), repo), true
	case method == "PUT" && at(0) == "collaborators" && len(rest) == 2:
		return fmt.Sprintf("Add collaborator %s to %s", at(1), repo), true
	case method == "POST" && at(0) == "issues" && at(2) == "comments":
		return fmt.Sprintf("Comment on #%s in %s", at(1), repo), true
	case method == "POST" && at(0) == "issues" && len(rest) == 1:
		return fmt.Sprintf("Open issue %q in %s", str("title"), repo), true
	case method == "POST" && at(0) == "actions" && at(1) == "workflows" && at(3) == "dispatches":
		return fmt.Sprintf("Run workflow %s on %s in %s", at(2), str("ref"), repo), true
	case method == "POST" && (at(0) == "keys" || at(0) == "hooks") && len(rest) == 1:
		return fmt.Sprintf("Add a %s to %s", map[string]string{"keys": "deploy key", "hooks": "webhook"}[at(0)], repo), true
	case method == "PUT" && at(0) == "actions" && at(1) == "secrets":
		return fmt.Sprintf("Set Actions secret %s in %s", at(2), repo), true
	}
	return "", false
}

func short(sha string) string {
	if len(sha) > 12 {
		return sha[:12]
	}
	return sha
}
