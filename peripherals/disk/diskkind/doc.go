// Package diskkind is the disk peripheral kind (Kind, registered by the
// netstation binary): it serves a disk.Server over the storage protocol and
// an nbd.Server on the runtime's stack, with the capability key and version
// the testbed keeps in its state directory, and the disk's control ops
// (disk-stats, disk-revoke). It is a package of its own because the NBD
// server builds on package disk.
package diskkind
