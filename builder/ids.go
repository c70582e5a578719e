package builder

import (
	"fmt"
	"os"
	"slices"
)

// StepID is the id the builder gives a step: a digest of its parent's id, its kind
// ("run", "copy"), the state it runs in (environment, workdir, user, shell) and the
// step's own inputs. Other backends use it so that their step ids agree with the
// builder's.
func StepID(parent, kind string, env []string, workdir string, uid, gid int, shell []string, inputs ...string) string {
	return stepID(parent, kind, &state{env: slices.Clone(env), workdir: workdir, uid: uid, gid: gid, shell: shell}, inputs...)
}

// CopyDigest is the content digest of what (copy (src SRC…) (dst DST) (exclude …))
// copies from dir, DST being already resolved against the workdir: paths, types,
// permissions, link targets and file contents. It fails, naming the source, when a
// source leads outside dir.
func CopyDigest(dir string, src []string, dst string, exclude []string) (string, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return "", fmt.Errorf("context: %w", err)
	}
	defer root.Close()
	p, err := planCopy(root, src, dst, exclude)
	if err != nil {
		return "", err
	}
	return p.digest()
}
