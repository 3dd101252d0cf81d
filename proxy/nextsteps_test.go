package proxy

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// errorCodesInSource lists every error code the package's code writes: a
// string literal given to a field named Error (errInfo, rpcDetail) or code
// (bodyError), in a composite literal or an assignment, or to a variable
// named code, or returned first by a function whose first result is named
// or used as a code (the MCP refusal callbacks).
func errorCodesInSource(t *testing.T) map[string]token.Position {
	t.Helper()
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	codes := map[string]token.Position{}
	lit := func(e ast.Expr) {
		if bl, ok := e.(*ast.BasicLit); ok && bl.Kind == token.STRING {
			if s, err := strconv.Unquote(bl.Value); err == nil {
				codes[s] = fset.Position(bl.Pos())
			}
		}
	}
	isCode := func(e ast.Expr) bool {
		switch x := e.(type) {
		case *ast.Ident:
			return x.Name == "Error" || x.Name == "code"
		case *ast.SelectorExpr:
			return x.Sel.Name == "Error" || x.Sel.Name == "code"
		}
		return false
	}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		af, err := parser.ParseFile(fset, f, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(af, func(n ast.Node) bool {
			switch x := n.(type) {
			case *ast.KeyValueExpr:
				if isCode(x.Key) {
					lit(x.Value)
				}
			case *ast.AssignStmt:
				for i, l := range x.Lhs {
					if isCode(l) && i < len(x.Rhs) && len(x.Lhs) == len(x.Rhs) {
						lit(x.Rhs[i])
					}
				}
			case *ast.FuncLit:
				// why callbacks: func(...) (code, reason, by string)
				if r := x.Type.Results; r != nil && len(r.List) == 1 && len(r.List[0].Names) == 0 && fieldCount(r) == 3 {
					ast.Inspect(x.Body, func(n ast.Node) bool {
						if rs, ok := n.(*ast.ReturnStmt); ok && len(rs.Results) == 3 {
							lit(rs.Results[0])
						}
						return true
					})
				}
			}
			return true
		})
	}
	return codes
}

func fieldCount(fl *ast.FieldList) int {
	if ident, ok := fl.List[0].Type.(*ast.Ident); ok && ident.Name == "string" {
		return 1
	}
	return 0
}

// Every error code the package writes has its own next_steps in
// defaultNextSteps: adding an error without one fails here. The walker
// itself is checked against codes written in every way the code uses.
func TestEveryErrorCodeHasNextSteps(t *testing.T) {
	codes := errorCodesInSource(t)
	for _, want := range []string{"blocked_by_policy", "budget_exhausted", "bad_request", "unsupported_content_encoding",
		"upstream_unreachable", "headers_too_large", "clawd_restarting", "approval_timeout", "denied_by_approver"} {
		if _, ok := codes[want]; !ok {
			t.Errorf("the source walker missed %q (found %v): it cannot be trusted", want, slices.Sorted(mapKeys(codes)))
		}
	}
	for c, pos := range codes {
		if defaultNextSteps[c] == "" {
			t.Errorf("%s: error code %q has no defaultNextSteps entry", pos, c)
		}
	}
	for c := range defaultNextSteps {
		if _, ok := codes[c]; !ok {
			t.Errorf("defaultNextSteps has %q, which no code writes", c)
		}
	}
	if nextStepsFor("no_such_code") == "" {
		t.Error("an unknown code gets no next_steps")
	}
}

func mapKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}
