// Package header gives typed views of wire headers, in the style of gVisor's
// pkg/tcpip/header: each header is a byte slice type with getters, setters
// and an Encode method that writes every field at once from a Fields struct.
//
// The views never copy and never check bounds beyond what Go does: callers
// validate lengths first (IsValid, or the Minimum*Size constants). The
// classifier in stack/engine is the one place that turns untrusted bytes
// into views, so the rest of the stack may index them freely.
//
// TCP joins later with the same pattern (a TCP type, TCPFields, Encode).
package header
