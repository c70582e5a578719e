package current

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

// openLogFile opens a job's log file, never through a symbolic link: a link put in the
// place of a log (to a file of the server's, say) is refused rather than read or written.
func openLogFile(path string, flag int, perm os.FileMode) (*os.File, error) {
	f, err := os.OpenFile(path, flag|syscall.O_NOFOLLOW, perm)
	if errors.Is(err, syscall.ELOOP) {
		return nil, fmt.Errorf("%s is a symbolic link, not a log file: refused", path)
	}
	return f, err
}
