package peripherals

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"sync"
)

// Kind is a kind of peripheral: a plug-in of the runtime. A kind is one
// package that declares a Kind and registers it with one call to Register;
// a topology then declares nodes of it (`kind: <Name>`, with its
// parameters under `params:`), and the node's process runs the runtime
// (its stack, control socket, counters, membership) with the kind's
// services on top. docs/peripherals.md walks through writing one.
type Kind struct {
	// Name is the topology's `kind:` value: lower case, unique.
	Name string
	// Doc says in one line what the kind is, for error messages and docs.
	Doc string
	// Params lists the topology parameters a node of the kind accepts;
	// the runtime (and the topology's validation) refuse any other.
	Params []Param
	// Check validates the parameters' values (ranges, formats) once their
	// names passed; nil: any value goes.
	Check func(Params) error
	// Start starts the kind's services on rt and returns once they serve.
	// ctx ends when the peripheral stops; stop (nil: nothing to do) is
	// called then, before the stack closes. Start runs before the node
	// joins the membership, so the services it adds (Runtime.AddService)
	// and the metadata it sets (Runtime.SetMeta) are published at once.
	Start func(ctx context.Context, rt *Runtime) (stop func() error, err error)
}

// Param is one topology parameter of a kind.
type Param struct {
	Name string
	Doc  string
}

// Params are a node's topology parameters: name -> value as written.
type Params map[string]string

// String returns parameter name, or def when it is not set.
func (ps Params) String(name, def string) string {
	if v, ok := ps[name]; ok {
		return v
	}
	return def
}

// Int returns parameter name as an integer, or def when it is not set.
func (ps Params) Int(name string, def int64) (int64, error) {
	v, ok := ps[name]
	if !ok {
		return def, nil
	}
	n, err := strconv.ParseInt(v, 0, 64)
	if err != nil {
		return 0, fmt.Errorf("%w: %s: %q is not an integer", ErrParam, name, v)
	}
	return n, nil
}

// Errors of the kind registry and of parameters.
var (
	// ErrUnknownKind: no kind of that name is registered.
	ErrUnknownKind = errors.New("unknown peripheral kind")
	// ErrParam: a node's parameter is unknown to its kind or has a bad value.
	ErrParam = errors.New("bad parameter")
)

// CheckParams checks that every parameter is one the kind declares, then
// the kind's own Check.
func (k Kind) CheckParams(ps Params) error {
	for name := range ps {
		if !slices.ContainsFunc(k.Params, func(p Param) bool { return p.Name == name }) {
			return fmt.Errorf("%w: kind %s has no parameter %q (want %s)", ErrParam, k.Name, name, k.paramNames())
		}
	}
	if k.Check != nil {
		if err := k.Check(ps); err != nil {
			if !errors.Is(err, ErrParam) {
				err = fmt.Errorf("%w: %w", ErrParam, err)
			}
			return err
		}
	}
	return nil
}

func (k Kind) paramNames() string {
	if len(k.Params) == 0 {
		return "none"
	}
	s := ""
	for i, p := range k.Params {
		if i > 0 {
			s += ", "
		}
		s += p.Name
	}
	return s
}

var registry struct {
	sync.RWMutex
	kinds map[string]Kind
}

// Register makes a kind available to topologies and to the node process.
// It panics when the kind has no name or no Start, or when the name is
// taken: registration happens once, at program start (like http.Handle).
func Register(k Kind) {
	if k.Name == "" || k.Start == nil {
		panic("peripherals: Register of a kind without a name or a Start")
	}
	registry.Lock()
	defer registry.Unlock()
	if _, dup := registry.kinds[k.Name]; dup {
		panic("peripherals: kind " + k.Name + " registered twice")
	}
	if registry.kinds == nil {
		registry.kinds = map[string]Kind{}
	}
	registry.kinds[k.Name] = k
}

// LookupKind returns the registered kind called name.
func LookupKind(name string) (Kind, bool) {
	registry.RLock()
	defer registry.RUnlock()
	k, ok := registry.kinds[name]
	return k, ok
}

// KindNames lists the registered kinds, sorted.
func KindNames() []string {
	registry.RLock()
	defer registry.RUnlock()
	names := make([]string, 0, len(registry.kinds))
	for n := range registry.kinds {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
