package spec

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Sentinel errors. Every problem Parse, Validate or Resolve reports wraps
// one of them, so callers can test with errors.Is.
var (
	ErrSyntax         = errors.New("yaml syntax error")
	ErrTooLarge       = errors.New("file too large")
	ErrUnknownKey     = errors.New("unknown key")
	ErrNotSupported   = errors.New("not supported yet")
	ErrMissing        = errors.New("missing value")
	ErrInvalid        = errors.New("invalid value")
	ErrUnit           = errors.New("unknown unit")
	ErrDuplicate      = errors.New("duplicate")
	ErrUnknownKind    = errors.New("unknown kind")
	ErrUnknownSegment = errors.New("unknown segment")
	ErrUnknownHost    = errors.New("unknown host")
	ErrAddress        = errors.New("unusable address")
	ErrWrongKind      = errors.New("block for another kind")
	ErrSubnetFull     = errors.New("subnet too small")
	ErrNoNodes        = errors.New("no nodes")
	ErrNoSubnet       = errors.New("no free subnet")
)

// Problem is one thing wrong with a topology, located by file, line and
// field path (such as "nodes[1].ip").
type Problem struct {
	Source string // file name
	Line   int    // 1-based; 0 when unknown
	Field  string // dotted path; empty for the document as a whole
	Msg    string
	Err    error // the sentinel this problem is an instance of
}

// Error formats the problem as "file:line: field: message".
func (p *Problem) Error() string {
	var b strings.Builder
	src := p.Source
	if src == "" {
		src = "topology"
	}
	b.WriteString(src)
	if p.Line > 0 {
		fmt.Fprintf(&b, ":%d", p.Line)
	}
	b.WriteString(": ")
	if p.Field != "" {
		b.WriteString(p.Field)
		b.WriteString(": ")
	}
	b.WriteString(p.Msg)
	return b.String()
}

// Unwrap returns the sentinel.
func (p *Problem) Unwrap() error { return p.Err }

// ValidationError lists every problem found in a topology, ordered by line.
type ValidationError struct {
	Problems []*Problem
}

// Error returns one problem per line, like errors.Join.
func (e *ValidationError) Error() string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = p.Error()
	}
	return strings.Join(lines, "\n")
}

// Unwrap returns the problems, so errors.Is and errors.As see each one.
func (e *ValidationError) Unwrap() []error {
	errs := make([]error, len(e.Problems))
	for i, p := range e.Problems {
		errs[i] = p
	}
	return errs
}

// problems collects Problems for one topology source.
type problems struct {
	source string
	list   []*Problem
}

func (ps *problems) add(line int, field string, err error, format string, args ...any) {
	ps.list = append(ps.list, &Problem{Source: ps.source, Line: line, Field: field, Msg: fmt.Sprintf(format, args...), Err: err})
}

// result sorts the problems by line (problems without a line last), keeping
// the order of discovery among equals, and returns nil when there are none.
func (ps *problems) result() error {
	if len(ps.list) == 0 {
		return nil
	}
	list := make([]*Problem, len(ps.list))
	copy(list, ps.list)
	key := func(p *Problem) int {
		if p.Line <= 0 {
			return int(^uint(0) >> 1)
		}
		return p.Line
	}
	slices.SortStableFunc(list, func(a, b *Problem) int { return cmp.Compare(key(a), key(b)) })
	return &ValidationError{Problems: list}
}
