// Package wire is the home of netstation's wire formats: the messages that
// a client and a server of a peripheral protocol both speak, kept below
// both ends so that each imports them downward (a cpu's storage client and
// the disk server share diskproto; the cpu's tile streamer and the display
// share tileproto; the cpu's file manager and the disk share capability).
//
// A package under wire is plain data: types, parse/encode and validation,
// with fuzz targets for every parser. It does no network I/O and holds no
// state of a running peripheral, and it imports nothing of ours but other
// wire formats and stack-level helpers (stack/header, stack/checksum). The
// one exception is capability's key file (capability.KeyFile), the file a
// testbed hands a disk and its file managers: its format lives with the
// capabilities it keys.
//
//   - diskproto: the storage protocol (docs/protocols/disk.md)
//   - tileproto: the display protocol (docs/protocols/display.md)
//   - capability: NASD-style capabilities carried by storage requests
package wire
