package healthcheck

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
)

func TestLatestPackagesAPI(t *testing.T) {
	f := newUIFixture(t)
	f.fill(t)
	resp, body := f.get(t, fixturePrefix+"/api/v1/latest/packages")
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("status %d, type %q: %s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	// The reference's shape, read the way ocaml.org reads it.
	var pkgs []struct {
		Name     string `json:"name"`
		Statuses []struct {
			Compiler string `json:"compiler"`
			Status   string `json:"status"`
		} `json:"statuses"`
	}
	if err := json.Unmarshal([]byte(body), &pkgs); err != nil {
		t.Fatalf("body is not a list of packages: %v\n%s", err, body)
	}
	var names []string
	for _, p := range pkgs {
		names = append(names, p.Name)
	}
	if want := []string{"a.1.0", "a.2.0", "b.1.0", "c.1.0", "d.0.1", "e.1"}; !slices.Equal(names, want) {
		t.Errorf("packages %q, want every version of run 2: %q", names, want)
	}
	if c := pkgs[3].Statuses; len(c) != 2 || c[0].Compiler != "4.14" || c[0].Status != "bad" || c[1].Status != "good" {
		t.Errorf("c.1.0's statuses %+v, want bad on 4.14 and good on 5.3", c)
	}
	for _, h := range []struct{ name, want string }{
		{"X-Health-Check-Run", "2"},
		{"X-Opam-Repository-Commit", "2222222222222222222222222222222222222222"},
		{"Link", `</health-check/api/v1/runs/2>; rel="describedby", </health-check/api/v1/runs/1/packages>; rel="prev"`},
	} {
		if got := resp.Header.Get(h.name); got != h.want {
			t.Errorf("header %s = %q, want %q", h.name, got, h.want)
		}
	}
	etag := resp.Header.Get("ETag")
	if etag == "" {
		t.Fatal("no ETag")
	}
	for _, tc := range []struct {
		name, ifNoneMatch string
		code              int
	}{
		{"same tag", etag, 304},
		{"weak form of the tag", "W/" + etag, 304},
		{"among others", `"x", ` + etag, 304},
		{"another tag", `"run-1-0"`, 200},
		{"no tag", "", 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := f.get(t, fixturePrefix+"/api/v1/latest/packages", "If-None-Match", tc.ifNoneMatch)
			if resp.StatusCode != tc.code {
				t.Errorf("status %d, want %d", resp.StatusCode, tc.code)
			}
			if tc.code == 304 && (body != "" || resp.Header.Get("ETag") != etag) {
				t.Errorf("304 with body %q and tag %q", body, resp.Header.Get("ETag"))
			}
		})
	}
	t.Run("a newer run changes the tag", func(t *testing.T) {
		f.addRun(t, Run{Commit: "5555555555555555555555555555555555555555"}, RunDone, []string{"a.2.0 4.14 good"}, nil)
		resp, body := f.get(t, fixturePrefix+"/api/v1/latest/packages", "If-None-Match", etag)
		if resp.StatusCode != 200 || resp.Header.Get("ETag") == etag || !strings.Contains(body, "a.2.0") {
			t.Errorf("status %d, tag %q (was %q)", resp.StatusCode, resp.Header.Get("ETag"), etag)
		}
	})
}

func TestRunsAPI(t *testing.T) {
	f := newUIFixture(t)
	f.fill(t)
	for _, tc := range []struct {
		name, path string
		code       int
		check      func(t *testing.T, body []byte)
	}{
		{name: "runs", path: "/api/v1/runs", code: 200, check: func(t *testing.T, body []byte) {
			var runs []APIRun
			if err := json.Unmarshal(body, &runs); err != nil {
				t.Fatal(err)
			}
			if len(runs) != 4 || runs[0].ID != 4 || runs[0].Previous != "/health-check/api/v1/runs/2" || runs[2].Diff != "/health-check/api/v1/diff/1..2" || runs[3].Previous != "" {
				t.Errorf("runs %+v", runs)
			}
		}},
		{name: "a running run's progress", path: "/api/v1/runs/3", code: 200, check: func(t *testing.T, body []byte) {
			var run APIRun
			if err := json.Unmarshal(body, &run); err != nil {
				t.Fatal(err)
			}
			if run.Status != RunRunning || run.Progress.Done != 2 || run.Progress.Total != 6 || run.Counts[Pending] != 4 || run.Progress.ETA.IsZero() {
				t.Errorf("run %+v, want running with 2/6 done, 4 pending and an ETA", run)
			}
		}},
		{name: "a run's packages", path: "/api/v1/runs/4/packages", code: 200, check: func(t *testing.T, body []byte) {
			var pkgs []APIPackage
			if err := json.Unmarshal(body, &pkgs); err != nil || len(pkgs) != 3 {
				t.Errorf("packages %+v, %v; want the candidate's 3", pkgs, err)
			}
		}},
		{name: "a diff", path: "/api/v1/diff/1..2", code: 200, check: func(t *testing.T, body []byte) {
			var d Diff
			if err := json.Unmarshal(body, &d); err != nil {
				t.Fatal(err)
			}
			if n := d.Count(); n[NowBroken] != 2 || n[NowFixed] != 1 || n[NowInstallable] != 1 {
				t.Errorf("diff counts %v", n)
			}
		}},
		{name: "no such run", path: "/api/v1/runs/77", code: 404},
		{name: "no such run's packages", path: "/api/v1/runs/77/packages", code: 404},
		{name: "bad diff", path: "/api/v1/diff/1..", code: 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := f.get(t, fixturePrefix+tc.path)
			if resp.StatusCode != tc.code {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.code, body)
			}
			if tc.check != nil {
				tc.check(t, []byte(body))
			} else if !strings.Contains(body, `"error"`) {
				t.Errorf("error body %q has no error", body)
			}
		})
	}
}

func TestRunningRunPackagesTagChanges(t *testing.T) {
	f := newUIFixture(t)
	f.fill(t)
	path := fixturePrefix + "/api/v1/runs/3/packages"
	resp, _ := f.get(t, path)
	etag := resp.Header.Get("ETag")
	if resp, _ := f.get(t, path, "If-None-Match", etag); resp.StatusCode != 304 {
		t.Fatalf("unchanged running run: status %d, want 304", resp.StatusCode)
	}
	if err := f.store.PutResults(context.Background(), []Result{{Run: 3, Package: "b.1.0", Switch: "4.14", State: Good}}); err != nil {
		t.Fatal(err)
	}
	if resp, body := f.get(t, path, "If-None-Match", etag); resp.StatusCode != 200 || !strings.Contains(body, `"good"`) {
		t.Errorf("after a result: status %d, want 200 with the new list", resp.StatusCode)
	}
}
