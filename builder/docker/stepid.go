package docker

import (
	"crypto/sha256"
	"encoding/hex"
	"slices"
	"strconv"
	"strings"

	"github.com/kiln-ci/kiln/builder/spec"
)

// Step ids are computed exactly as the runc builder (package builder) computes them,
// so that a step has one id whichever backend runs it; TestSameIDsAsRuncBuilder keeps
// the two in step.

// stepContext is what earlier ops set for later steps.
type stepContext struct {
	env     []string // KEY=VALUE, base config first, later (env …) replacing
	workdir string
	user    spec.User
	shell   []string
}

func (c *stepContext) setEnv(k, v string) {
	c.env = slices.DeleteFunc(c.env, func(e string) bool { return strings.HasPrefix(e, k+"=") })
	c.env = append(c.env, k+"="+v)
}

func (c *stepContext) userString() string {
	if c.user.Name != "" {
		return c.user.Name
	}
	return strconv.Itoa(c.user.UID) + ":" + strconv.Itoa(c.user.GID)
}

// hashID is the digest of its fields, each length-prefixed.
func hashID(fields ...string) string {
	h := sha256.New()
	for _, f := range fields {
		h.Write([]byte(strconv.Itoa(len(f)) + ":"))
		h.Write([]byte(f))
	}
	return hex.EncodeToString(h.Sum(nil))
}

// baseID is the id of the snapshot of a base image.
func baseID(imageID string) string { return hashID("from", imageID) }

func stepID(parent, kind string, env []string, workdir, user string, shell []string, inputs ...string) string {
	fields := []string{"kiln-step-v1", parent, kind,
		"env", strings.Join(env, "\x00"),
		"workdir", workdir,
		"user", user,
		"shell", strings.Join(shell, "\x00")}
	return hashID(append(fields, inputs...)...)
}

// runID is the id of a (run …) step; secret values never enter it.
func runID(parent string, op spec.Run, c *stepContext) string {
	inputs := []string{"shell", op.Shell, "network"}
	if op.HostNetwork() {
		inputs = append(inputs, "host")
	} else {
		inputs = append(inputs, "none")
	}
	for _, m := range op.Cache {
		inputs = append(inputs, "cache", m.ID, inside(c.workdir, m.Target))
	}
	for _, s := range op.Secrets {
		inputs = append(inputs, "secret", s.ID, inside(c.workdir, s.Target))
	}
	if len(op.Secrets) > 0 {
		inputs = append(inputs, "log", "redacted")
	}
	return stepID(parent, "run", c.env, c.workdir, c.userString(), c.shell, inputs...)
}

// copyID is the id of a (copy …) step whose content digest is source ("context:…" or
// "build:<id>").
func copyID(parent string, op spec.Copy, c *stepContext, source string) string {
	abs := inside(c.workdir, op.Dst)
	if strings.HasSuffix(op.Dst, "/") && abs != "/" {
		abs += "/"
	}
	inputs := []string{"src", strings.Join(op.Src, "\x00"), "dst", abs, "exclude", strings.Join(op.Exclude, "\x00"), "source", source}
	return stepID(parent, "copy", nil, c.workdir, c.userString(), nil, inputs...)
}
