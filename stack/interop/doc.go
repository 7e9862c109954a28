// Package interop holds the privileged tests that put netstation's
// user-level stack on real veth pairs (directly, and through a Linux bridge)
// with the kernel's own stack as the peer: kernel ping and kernel UDP
// sockets against ours, and stack against stack. It has no non-test code.
package interop
