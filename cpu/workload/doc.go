// Package workload holds the processor's workloads: the storage demo (write
// seeded data to a disk, flush, read it back, verify its SHA-256) with an
// fio-shaped report.
package workload
