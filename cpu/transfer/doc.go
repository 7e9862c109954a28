// Package transfer is the processor's side of a third-party transfer
// (CMU NASD, ISI Netstation): it sends a disk one TRANSFER order — a byte
// range, a display, a tile layout and a capability bound to that display —
// and waits for the disk's reply and the display's completion REPORT. The
// image itself goes from the disk to the display and never through here.
package transfer
