package deployer

import (
	"context"
	"fmt"
	"path"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// overrideFile is the compose file, beside the project's, that sets the deployed
// service's image.
func (ct *ComposeTarget) overrideFile() string {
	return strings.TrimSuffix(ct.File, path.Ext(ct.File)) + ".kiln.yml"
}

// composeOverride is an override file setting service's image, in the compose file
// format version of the project's file (docker-compose 1.x refuses to merge files of
// different versions).
func composeOverride(project, service, image string) ([]byte, error) {
	var p struct {
		Version string `yaml:"version"`
	}
	if err := yaml.Unmarshal([]byte(project), &p); err != nil {
		return nil, fmt.Errorf("read the compose file: %w", err)
	}
	o := struct {
		Version  string                       `yaml:"version,omitempty"`
		Services map[string]map[string]string `yaml:"services"`
	}{p.Version, map[string]map[string]string{service: {"image": image}}}
	return yaml.Marshal(o)
}

// deployCompose sets the image of the compose service in the project's override file
// and recreates the service, health-checked. On a failure the previous override file
// comes back and the service is recreated from it.
func (s *stage) deployCompose(ctx context.Context, image string) error {
	ct := s.t.Compose
	if err := s.pull(ctx, image); err != nil {
		return err
	}
	project, err := s.r.readFile(ctx, ct.File)
	if err != nil {
		return fmt.Errorf("compose file %s: %w", ct.File, err)
	}
	if project == "" {
		return fmt.Errorf("compose file %s: missing (create the project first)", ct.File)
	}
	override, err := composeOverride(project, ct.Service, image)
	if err != nil {
		return fmt.Errorf("compose file %s: %w", ct.File, err)
	}
	prev, err := s.r.readFile(ctx, ct.overrideFile())
	if err != nil {
		return fmt.Errorf("keep the previous %s: %w", ct.overrideFile(), err)
	}
	up := func(ctx context.Context) error {
		args := []string{"docker-compose", "--ansi", "never", "-f", ct.File, "-f", ct.overrideFile()}
		if ct.Project != "" {
			args = append(args, "-p", ct.Project)
		}
		_, err := s.r.run(ctx, nil, append(args, "up", "-d", "--no-deps", "--no-build", ct.Service)...)
		return err
	}
	restore := func() error {
		ctx := context.WithoutCancel(ctx)
		var err error
		if prev == "" { // the first deploy: without an override the project's own image comes back
			_, err = s.r.run(ctx, nil, "rm", "-f", ct.overrideFile())
		} else {
			err = s.r.writeFile(ctx, ct.overrideFile(), []byte(prev))
		}
		if err != nil {
			return err
		}
		return up(ctx)
	}
	if err := s.r.writeFile(ctx, ct.overrideFile(), override); err != nil {
		return fmt.Errorf("write %s: %w", ct.overrideFile(), err)
	}
	s.logf("compose service %s: %s", ct.Service, image)
	if err := up(ctx); err != nil {
		if rerr := restore(); rerr != nil {
			return fmt.Errorf("compose up %s: %w; restoring the previous version: %v", ct.Service, err, rerr)
		}
		return fmt.Errorf("compose up %s: %w (the previous version was restored)", ct.Service, err)
	}
	if out, ok := s.check(ctx, strings.TrimSuffix(ct.URL, "/")+s.health.Path, s.health.Deadline.Or(time.Minute)); !ok {
		return &HealthError{Output: out, Restore: restore()}
	}
	return nil
}
