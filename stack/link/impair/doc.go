// Package impair wraps a link.Link with seeded loss, corruption, delay and
// a down switch, applied in the user-level stack's own link layer.
//
// The fabric can impair in the kernel too (tc BPF on the host side of each
// veth, which needs root); this wrapper is the method that works everywhere,
// including rootless testbeds, and the only way to delay frames on a kernel
// without netem.
//
// Fidelity: loss and corruption are exact Bernoulli trials per frame from a
// PCG generator seeded by Params.Seed, so one seed gives one drop pattern
// for one frame sequence. Delay applies to transmitted frames only (set it
// on both ends for a symmetric path): each frame is copied into a delay line
// and written when its due time comes; the added delay is exact to within
// the Go timer's wake-up latency (tens of microseconds here) and frames keep
// their order. Delay does not limit rate: a delay line holds at most
// MaxDelayed frames, and frames beyond that are dropped and counted.
package impair
