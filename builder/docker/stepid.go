package docker

import (
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"strings"

	"github.com/kiln-ci/kiln/builder/spec"
)

// stepContext is what earlier ops set for later steps.
type stepContext struct {
	env     []string // KEY=VALUE, base config first, later (env …) replacing
	workdir string
	user    spec.User
	shell   []string
}

func (c *stepContext) setEnv(k, v string) {
	for i, kv := range c.env {
		if strings.HasPrefix(kv, k+"=") {
			c.env = append(c.env[:i:i], c.env[i+1:]...)
			break
		}
	}
	c.env = append(c.env, k+"="+v)
}

func (c *stepContext) userString() string {
	if c.user.Name != "" {
		return c.user.Name
	}
	return strconv.Itoa(c.user.UID) + ":" + strconv.Itoa(c.user.GID)
}

// stepID is the id of a step: a digest of its parent, the op, the context it runs in
// and, for copies, the digest of what is copied. Secret values never enter it.
func stepID(parent string, op spec.Op, c *stepContext, content string) string {
	h := sha256.New()
	field := func(k, v string) {
		h.Write([]byte(k))
		h.Write([]byte{0})
		h.Write([]byte(strconv.Itoa(len(v))))
		h.Write([]byte{0})
		h.Write([]byte(v))
	}
	field("parent", parent)
	field("op", spec.OpString(op))
	field("env", strings.Join(c.env, "\x00"))
	field("workdir", c.workdir)
	field("user", c.userString())
	field("shell", strings.Join(c.shell, "\x00"))
	field("content", content)
	return hex.EncodeToString(h.Sum(nil))
}
