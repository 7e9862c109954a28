// Package cpu is netstation's processor peripheral: the node that runs
// workloads and drives the other peripherals. Its protocol clients live in
// sub-packages (storage for the disk protocol); workloads, third-party
// transfer orders and benchmark endpoints join them as the project grows.
package cpu
