package cluster

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/nats-io/nats-server/v2/server"
)

// NATSAuth admits the clients of an embedded NATS server by token, each with the
// permissions of its role: the scheduler may do anything; clients (admin, services) may
// not publish to workers; workers may not publish to workers or to the scheduler's API,
// nor write the fleet's buckets or change its streams. Only the scheduler's messages
// reach a worker's subjects.
type NATSAuth struct {
	scheduler, worker, client string
}

const subjWorkers = "kiln.fleet.worker.>" // hello, beat, done: what workers tell the scheduler

var (
	clientPermissions = &server.Permissions{
		Publish:   &server.SubjectPermission{Deny: []string{subjToWorker + ">"}},
		Subscribe: &server.SubjectPermission{Deny: []string{subjAPI + ">", subjWorkers}},
	}
	workerPermissions = &server.Permissions{
		Publish: &server.SubjectPermission{Deny: []string{
			subjToWorker + ">", subjAPI + ">", "$KV.>", "$O.>",
			"$JS.API.STREAM.CREATE.>", "$JS.API.STREAM.UPDATE.>", "$JS.API.STREAM.DELETE.>",
			"$JS.API.STREAM.PURGE.>", "$JS.API.STREAM.MSG.DELETE.>", "$JS.API.STREAM.RESTORE.>",
		}},
		Subscribe: &server.SubjectPermission{Deny: []string{subjAPI + ">", subjWorkers}},
	}
)

// Check admits a client whose token is one of the three, with its role's permissions.
func (a *NATSAuth) Check(c server.ClientAuthentication) bool {
	tok := []byte(c.GetOpts().Token)
	is := func(secret string) bool { return subtle.ConstantTimeCompare(tok, []byte(secret)) == 1 }
	switch {
	case is(a.scheduler):
		c.RegisterUser(&server.User{Username: "kiln-scheduler"})
	case is(a.client):
		c.RegisterUser(&server.User{Username: "kiln-client", Permissions: clientPermissions})
	case is(a.worker):
		c.RegisterUser(&server.User{Username: "kiln-worker", Permissions: workerPermissions})
	default:
		return false
	}
	return true
}

// loadAuth makes the tokens of an embedded server: the scheduler's anew at each start,
// the workers' and clients' as given or else read from (first made in) stateDir/auth.
func loadAuth(stateDir, worker, client string, log *slog.Logger) (*NATSAuth, error) {
	if stateDir == "" {
		return nil, errors.New("embedded NATS: no state folder")
	}
	a := &NATSAuth{scheduler: newSecret(), worker: worker, client: client}
	var err error
	if a.worker == "" {
		if a.worker, err = storedToken(TokenPath(stateDir, "worker"), log); err != nil {
			return nil, err
		}
	}
	if a.client == "" {
		if a.client, err = storedToken(TokenPath(stateDir, "client"), log); err != nil {
			return nil, err
		}
	}
	return a, nil
}

// TokenPath is the file where an embedded fleet in stateDir keeps the NATS token of a
// role ("worker" or "client") it made.
func TokenPath(stateDir, role string) string {
	return filepath.Join(stateDir, "auth", role+".token")
}

// storedToken reads the token kept in path, making it first when there is none.
func storedToken(path string, log *slog.Logger) (string, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		tok := strings.TrimSpace(string(b))
		if tok == "" {
			return "", fmt.Errorf("NATS token %s is empty; remove it to have a new one made", path)
		}
		return tok, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("NATS token: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", fmt.Errorf("NATS token: %w", err)
	}
	tok := newSecret()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", fmt.Errorf("NATS token: %w", err)
	}
	_, err = f.WriteString(tok + "\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return "", fmt.Errorf("NATS token %s: %w", path, err)
	}
	log.Info("made a NATS token for the fleet", "path", path)
	return tok, nil
}
