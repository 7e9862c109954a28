// Package nbd serves a disk peripheral over the Network Block Device
// protocol (NetworkBlockDevice/nbd doc/proto.md), so the tools storage
// engineers already trust — nbdinfo, nbdcopy, qemu-img, fio's nbd engine,
// the kernel's nbd client — can be pointed at it directly.
//
// The subset is the fixed-newstyle handshake (NO_ZEROES honoured), the
// options GO, INFO (EXPORT and BLOCK_SIZE), LIST, ABORT and the old
// EXPORT_NAME, and simple replies to READ, WRITE (FUA), FLUSH, TRIM and
// DISC. Structured replies are refused, so clients fall back to simple
// ones. Requests of one connection run concurrently, bounded in number and
// bytes, and their replies leave in completion order.
//
// The data is the disk server's (disk.Server's block-device methods): one
// backing file, one fdatasync for both protocols, and every request passes
// the same disk.Authorizer the UDP protocol uses, with the capability
// carried in the export name. docs/protocols/nbd.md has the details.
//
// A Server speaks over any net.Listener: kernel sockets in tests, the
// peripheral's user-level TCP in a testbed.
package nbd
