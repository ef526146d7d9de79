package placement

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestImports keeps placement a pure core: no I/O, no clock, no
// networking, no other Shoal package. Its non-test files may import only
// these standard packages; adding one is a deliberate decision.
func TestImports(t *testing.T) {
	allowed := map[string]bool{
		"cmp": true, "errors": true, "fmt": true, "math": true, "slices": true,
		"sort": true, "strconv": true, "strings": true, "text/tabwriter": true,
	}
	// Explicitly forbidden, whatever the allow list says.
	forbidden := []string{
		"github.com/shoalmesh/shoal", // runtime, lb, node, gossip, ...
		"github.com/containerd", "github.com/libp2p", "github.com/hashicorp",
		"net", "os", "os/exec", "time", "sync", "math/rand", "math/rand/v2",
		"hash/maphash", "unsafe", "io", "log", "log/slog", "context",
	}
	for path, imports := range packageImports(t) {
		for _, imp := range imports {
			for _, f := range forbidden {
				if imp == f || strings.HasPrefix(imp, f+"/") {
					t.Errorf("%s imports forbidden %q", path, imp)
				}
			}
			if !allowed[imp] {
				t.Errorf("%s imports %q, not in the allow list", path, imp)
			}
		}
	}
}

// TestPurity checks the rest of "pure": no goroutines, and no package-level
// variables except the sentinel errors.
func TestPurity(t *testing.T) {
	for path, f := range parseFiles(t) {
		ast.Inspect(f, func(n ast.Node) bool {
			if g, ok := n.(*ast.GoStmt); ok {
				t.Errorf("%s: go statement at %v", path, g.Pos())
			}
			return true
		})
		for _, d := range f.Decls {
			g, ok := d.(*ast.GenDecl)
			if !ok || g.Tok != token.VAR {
				continue
			}
			for _, spec := range g.Specs {
				for _, name := range spec.(*ast.ValueSpec).Names {
					if !strings.HasPrefix(name.Name, "Err") {
						t.Errorf("%s: package-level variable %s", path, name.Name)
					}
				}
			}
		}
	}
}

// parseFiles parses the package's non-test files.
func parseFiles(t *testing.T) map[string]*ast.File {
	t.Helper()
	paths, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*ast.File{}
	fset := token.NewFileSet()
	for _, p := range paths {
		if strings.HasSuffix(p, "_test.go") {
			continue
		}
		src, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		f, err := parser.ParseFile(fset, p, src, parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		out[p] = f
	}
	if len(out) == 0 {
		t.Fatal("no files found")
	}
	return out
}

// packageImports returns the imports of each non-test file.
func packageImports(t *testing.T) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	for p, f := range parseFiles(t) {
		for _, imp := range f.Imports {
			path, err := strconv.Unquote(imp.Path.Value)
			if err != nil {
				t.Fatal(err)
			}
			out[p] = append(out[p], path)
		}
	}
	return out
}
