// Package mem is an in-memory Link pair, the test double of a veth pair:
// what one end writes, the other end reads. It needs no privileges and no
// kernel, so whole stacks can be tested and benchmarked end to end.
//
// ReadBatch returns every frame already queued, up to the batch size, as a
// ring-backed link would; frame buffers come from a pool shared by both
// ends and go back to it on the next ReadBatch, so a steady stream
// allocates nothing. Writers block while the peer's queue (Options.Depth)
// is full: unlike a veth, the pair pushes back instead of dropping.
//
// Switch joins several links in one broadcast domain (a learning switch,
// the test double of a testbed segment's bridge), so a whole testbed of
// stacks runs in one process; it drops rather than blocks, as a bridge does.
package mem
