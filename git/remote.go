package git

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/url"
	"regexp"
	"strings"
)

// Credentials authenticate to a remote over HTTP(S): a token (a GitHub installation
// token, a Gitea access token) or a password, with a user name.
type Credentials struct {
	// Username defaults to "x-access-token", which GitHub expects with a token; Gitea and
	// Forgejo accept any user name with a token.
	Username string
	// Token is the token or password.
	Token string
}

// CredentialSource gives the credentials to use for a remote URL (credentials removed),
// ok=false when the remote needs none. It is asked before each command, so a source can
// hand out short-lived tokens.
type CredentialSource func(ctx context.Context, remote string) (c Credentials, ok bool, err error)

// StaticCredentials returns a source that gives c for every remote on the host of rawURL
// (scheme and host must match) and nothing for other remotes.
func StaticCredentials(rawURL string, c Credentials) CredentialSource {
	u, err := url.Parse(rawURL)
	return func(_ context.Context, remote string) (Credentials, bool, error) {
		if err != nil {
			return Credentials{}, false, fmt.Errorf("credentials for %s: %w", Redact(rawURL), err)
		}
		r, perr := url.Parse(remote)
		if perr != nil || r.Scheme != u.Scheme || r.Host != u.Host {
			return Credentials{}, false, nil
		}
		return c, true, nil
	}
}

// authEnv returns the environment that hands c to git for remote, scoped to the remote's
// scheme and host: an Authorization header through GIT_CONFIG_* variables, which other
// users cannot read and no log shows.
func authEnv(remote string, c Credentials) ([]string, error) {
	u, err := url.Parse(remote)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") {
		return nil, fmt.Errorf("credentials for %s: only http(s) remotes take a token", Redact(remote))
	}
	user := c.Username
	if user == "" {
		user = "x-access-token"
	}
	header := "Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+c.Token))
	scope := u.Scheme + "://" + u.Host + "/"
	return []string{
		"GIT_CONFIG_COUNT=1",
		"GIT_CONFIG_KEY_0=http." + scope + ".extraHeader",
		"GIT_CONFIG_VALUE_0=" + header,
	}, nil
}

// splitUserinfo removes credentials written into an http(s) URL and returns them.
func splitUserinfo(remote string) (clean string, c Credentials, ok bool) {
	u, err := url.Parse(remote)
	if err != nil || u.User == nil || (u.Scheme != "http" && u.Scheme != "https") {
		return remote, Credentials{}, false
	}
	pw, has := u.User.Password()
	name := u.User.Username()
	u.User = nil
	if !has {
		// A token given as the user name alone.
		return u.String(), Credentials{Username: "x-access-token", Token: name}, name != ""
	}
	return u.String(), Credentials{Username: name, Token: pw}, true
}

var (
	httpUserinfo  = regexp.MustCompile(`(?i)(https?://)[^/@\s]+@`)
	otherPassword = regexp.MustCompile(`(://[^/@\s:]+):[^/@\s]+@`)
)

// Redact removes credentials from every URL in s, for logs and error messages.
func Redact(s string) string {
	s = httpUserinfo.ReplaceAllString(s, "$1")
	return otherPassword.ReplaceAllString(s, "$1:***@")
}

// MirrorName is the directory name of the mirror of remote: readable (host and path),
// safe as one path element, and unique per remote (a digest of the URL without
// credentials ends it).
func MirrorName(remote string) string {
	clean, _, _ := splitUserinfo(remote)
	readable := clean
	if i := strings.Index(readable, "://"); i >= 0 {
		readable = readable[i+3:]
	} else if at := strings.Index(readable, "@"); at >= 0 && strings.Contains(readable[at:], ":") {
		readable = readable[at+1:] // scp-like user@host:path
	}
	readable = strings.TrimSuffix(strings.TrimSuffix(readable, "/"), ".git")
	var b strings.Builder
	for _, r := range readable {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_':
			b.WriteRune(r)
		case r == '.' && b.Len() > 0:
			b.WriteRune(r)
		default:
			b.WriteRune('-')
		}
	}
	name := strings.Trim(b.String(), "-.")
	if len(name) > 80 {
		name = strings.TrimLeft(name[len(name)-80:], "-.")
	}
	if name == "" {
		name = "repo"
	}
	sum := sha256.Sum256([]byte(clean))
	return name + "-" + hex.EncodeToString(sum[:6]) + ".git"
}
