package image

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"
)

// Tar writes the base's root filesystem to w as a tar stream made with GNU tar
// (numeric owners, modes, devices, hard links and extended attributes kept), in name
// order when sorted is set.
//
// A base's files never change, but builders import bases by hard links, and a new
// link changes a file's ctime, which GNU tar reports as "file changed as we read it"
// with exit status 1. Tar accepts that status when it is the only complaint.
func (b Base) Tar(ctx context.Context, w io.Writer, sorted bool) error {
	args := []string{"-C", b.Rootfs, "--numeric-owner", "--xattrs", "--xattrs-include=*", "--warning=no-file-changed"}
	if sorted {
		args = append(args, "--sort=name")
	}
	cmd := exec.CommandContext(ctx, "tar", append(args, "-cf", "-", ".")...)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = w, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if errors.As(err, &exit) && exit.ExitCode() == 1 && strings.TrimSpace(stderr.String()) == "" && ctx.Err() == nil {
		return nil
	}
	if err != nil {
		return fmt.Errorf("tar of %s (%s): %v: %s", b.Ref, b.Rootfs, err, strings.TrimSpace(stderr.String()))
	}
	return nil
}
