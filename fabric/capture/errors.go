package capture

import "errors"

// ErrFilter reports a filter expression that does not parse or compiles
// to a program too large.
var ErrFilter = errors.New("bad capture filter")
