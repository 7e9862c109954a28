// Package storage is the client of netstation's storage protocol
// (docs/protocols/disk.md): a remote block device reached over any
// net.PacketConn — a kernel UDP socket or a UDP socket of the user-level
// stack.
//
// A Client is safe for concurrent use and pipelines: every goroutine's
// ReadAt/WriteAt/Trim is split into requests of at most the server's
// largest I/O, and up to the server's advertised window of requests are
// outstanding at once, so queue depth is simply the number of goroutines
// issuing I/O. Lost requests and replies are retransmitted with a fresh
// tag after a Jacobson/Karels retransmission timeout with exponential
// back-off; the stable request id lets the server's duplicate cache answer
// a retransmitted WRITE without running it twice. When the disk restarts,
// the client reopens its session and retransmits what was outstanding.
//
// Durability follows NBD: a WriteAt with fua returns only once the data is
// on stable storage; otherwise data is durable once a Flush issued after
// the WriteAt returned has returned.
package storage
