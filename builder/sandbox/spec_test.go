package sandbox

import (
	"slices"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func TestSpecIsolation(t *testing.T) {
	tests := []struct {
		name          string
		uid           uint32
		newPrivileges bool
		wantCaps      bool // effective and permitted capabilities
		wantNNP       bool
	}{
		{name: "root", uid: 0, wantCaps: true, wantNNP: true},
		{name: "another user has no capabilities", uid: 1000, wantCaps: false, wantNNP: true},
		{name: "setuid allowed", uid: 1000, newPrivileges: true, wantCaps: false, wantNNP: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &Runc{NewPrivileges: tt.newPrivileges}
			sp := r.spec(Config{Rootfs: "/x", Args: []string{"true"}, UID: tt.uid}, "/kiln/t", nil)
			caps := sp.Process.Capabilities
			if got := len(caps.Effective) > 0 && len(caps.Permitted) > 0; got != tt.wantCaps {
				t.Errorf("effective %v, permitted %v; want capabilities: %v", caps.Effective, caps.Permitted, tt.wantCaps)
			}
			for _, c := range []string{"CAP_MKNOD", "CAP_NET_RAW", "CAP_AUDIT_WRITE", "CAP_SYS_ADMIN"} {
				if slices.Contains(caps.Bounding, c) {
					t.Errorf("%s in the bounding set", c)
				}
			}
			if sp.Process.NoNewPrivileges != tt.wantNNP {
				t.Errorf("NoNewPrivileges = %v, want %v", sp.Process.NoNewPrivileges, tt.wantNNP)
			}
			sc := sp.Linux.Seccomp
			if sc == nil || sc.DefaultAction != specs.ActErrno {
				t.Fatalf("seccomp = %+v, want an allow list", sc)
			}
			for _, rule := range sc.Syscalls {
				if rule.Action == specs.ActAllow && len(rule.Args) == 0 {
					for _, n := range []string{"unshare", "setns", "mount", "keyctl", "bpf", "clone", "clone3", "kcmp"} {
						if slices.Contains(rule.Names, n) {
							t.Errorf("%s allowed with any argument", n)
						}
					}
				}
			}
		})
	}
}

func TestSpecTmpfs(t *testing.T) {
	tests := []struct {
		name  string
		tmpfs []string
	}{
		{name: "none"},
		{name: "a work dir", tmpfs: []string{"/bench"}},
		{name: "two", tmpfs: []string{"/bench", "/tmp"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sp := (&Runc{}).spec(Config{Rootfs: "/x", Args: []string{"true"}, Tmpfs: tt.tmpfs}, "/kiln/t", nil)
			var got []string
			for _, m := range sp.Mounts {
				if m.Type == "tmpfs" && m.Source == "tmpfs" && m.Destination != "/dev" {
					got = append(got, m.Destination)
				}
			}
			if strings.Join(got, " ") != strings.Join(tt.tmpfs, " ") {
				t.Errorf("tmpfs mounts %q, want %q", got, tt.tmpfs)
			}
		})
	}
}

func TestSpecCPUs(t *testing.T) {
	tests := []struct {
		name   string
		limits Limits
		cpus   string
		quota  bool
	}{
		{name: "unlimited", limits: Limits{}},
		{name: "a benchmark slot's cpuset", limits: Limits{CPUSet: "1"}, cpus: "1"},
		{name: "cpuset and a time share", limits: Limits{CPUSet: "2,3", CPUs: 1.5}, cpus: "2,3", quota: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sp := (&Runc{}).spec(Config{Rootfs: "/x", Args: []string{"true"}, Limits: tt.limits}, "/kiln/t", nil)
			cpu := sp.Linux.Resources.CPU
			var cpus string
			var quota bool
			if cpu != nil {
				cpus, quota = cpu.Cpus, cpu.Quota != nil
			}
			if cpus != tt.cpus || quota != tt.quota {
				t.Errorf("cpus %q quota %v, want %q %v", cpus, quota, tt.cpus, tt.quota)
			}
		})
	}
}
