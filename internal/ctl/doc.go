// Package ctl is the control-socket protocol shared by the testbed
// supervisor and every peripheral: one JSON request per connection line, one
// or more JSON responses back, over a unix stream socket in the testbed's
// state directory. It is deliberately boring so that `socat` can speak it:
//
//	{"op":"status"}
//	{"ok":true,"data":{...}}
//
// A handler may stream several responses (e.g. ping replies or exec output)
// before the final one, which has Done set.
package ctl
