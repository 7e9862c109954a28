// Package peripherals is the runtime every virtual peripheral shares: it
// brings up the peripheral's own user-level stack on the veth of its
// namespace (which has no kernel address), serves the control socket
// (status, counters, ping, shutdown) and runs the services of its kind.
// The kinds' services live in sub-packages (disk, display) and in the cpu
// package.
package peripherals
