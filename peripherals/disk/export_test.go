package disk

import "github.com/netstation/netstation/internal/wire/diskproto"

// SetRunHook makes s call f on the worker before running each request.
func SetRunHook(s *Server, f func(*diskproto.Request)) { s.runHook.Store(&f) }
