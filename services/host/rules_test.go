package host

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/kiln-ci/kiln/internal/testenv"
)

const module = "github.com/kiln-ci/kiln"

// servicePackage names the service a package path belongs to ("ocamlci" for
// services/ocamlci/...), or "" for what is not a service: the host and the pieces
// services share (services/internal/...).
func servicePackage(rel string) string {
	parts := strings.Split(filepath.ToSlash(rel), "/")
	if len(parts) < 2 || parts[0] != "services" || parts[1] == "host" || parts[1] == "internal" {
		return ""
	}
	return parts[1]
}

// checkRules reads the Go files of the module at root and returns what breaks the two
// rules of the services: a service never imports another service, and cmd never names
// an operation of a service.
func checkRules(root string) ([]string, error) {
	var problems []string
	opNames := map[string]string{} // operation name → file defining it
	var cmdFiles []string
	fset := token.NewFileSet()
	err := filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		if d.IsDir() {
			if name := d.Name(); path != root && (name == "testdata" || strings.HasPrefix(name, ".")) {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") {
			return nil
		}
		if strings.HasPrefix(filepath.ToSlash(rel), "cmd/") {
			cmdFiles = append(cmdFiles, path)
		}
		svc := servicePackage(filepath.Dir(rel))
		if svc == "" {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		for _, imp := range f.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			rest, ok := strings.CutPrefix(p, module+"/")
			if !ok {
				continue
			}
			if other := servicePackage(rest); other != "" && other != svc {
				problems = append(problems, fmt.Sprintf("%s: service %s imports service %s (%s); move what both need to services/internal or a layer below", rel, svc, other, p))
			}
		}
		ast.Inspect(f, func(n ast.Node) bool {
			if name, ok := opName(n); ok {
				opNames[name] = rel
			}
			return true
		})
		return nil
	})
	if err != nil {
		return nil, err
	}
	for _, path := range cmdFiles {
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return nil, err
		}
		rel, _ := filepath.Rel(root, path)
		ast.Inspect(f, func(n ast.Node) bool {
			if lit, ok := n.(*ast.BasicLit); ok && lit.Kind == token.STRING {
				if s, err := strconv.Unquote(lit.Value); err == nil {
					if def, ok := opNames[s]; ok {
						problems = append(problems, fmt.Sprintf("%s: names the operation %q of %s; ask the service instead", rel, s, def))
					}
				}
			}
			return true
		})
	}
	sort.Strings(problems)
	return problems, nil
}

// opName recognises `current.Op[...]{Name: "..."}` and returns the name.
func opName(n ast.Node) (string, bool) {
	cl, ok := n.(*ast.CompositeLit)
	if !ok {
		return "", false
	}
	typ := cl.Type
	if ix, ok := typ.(*ast.IndexListExpr); ok {
		typ = ix.X
	} else if ix, ok := typ.(*ast.IndexExpr); ok {
		typ = ix.X
	}
	sel, ok := typ.(*ast.SelectorExpr)
	if !ok || sel.Sel.Name != "Op" {
		return "", false
	}
	for _, el := range cl.Elts {
		kv, ok := el.(*ast.KeyValueExpr)
		if !ok {
			continue
		}
		if k, ok := kv.Key.(*ast.Ident); ok && k.Name == "Name" {
			if lit, ok := kv.Value.(*ast.BasicLit); ok && lit.Kind == token.STRING {
				s, err := strconv.Unquote(lit.Value)
				return s, err == nil
			}
		}
	}
	return "", false
}

func TestTheTreeKeepsTheServiceRules(t *testing.T) {
	problems, err := checkRules(testenv.Root())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Error(p)
	}
}

func TestServiceRulesCatchBreaches(t *testing.T) {
	cases := []struct {
		name string
		want []string
	}{
		{"clean", nil},
		{"service-imports-service", []string{"services/b/b.go: service b imports service a"}},
		{"cmd-names-op", []string{`cmd/kiln/serve.go: names the operation "a-build" of services/a/a.go`}},
		{"shared-is-fine", nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			problems, err := checkRules(filepath.Join("testdata", "rules", c.name))
			if err != nil {
				t.Fatal(err)
			}
			if len(problems) != len(c.want) {
				t.Fatalf("problems %q, want %d like %q", problems, len(c.want), c.want)
			}
			for i, w := range c.want {
				if !strings.HasPrefix(problems[i], w) {
					t.Errorf("problem %q, want %q", problems[i], w)
				}
			}
		})
	}
}
