// Package mem is an in-memory Link pair, the test double of a veth pair:
// what one end writes, the other end reads. It needs no privileges and no
// kernel, so whole stacks can be tested and benchmarked end to end.
package mem
