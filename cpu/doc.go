// Package cpu is netstation's processor peripheral: the kind (Kind) that
// runs workloads and drives the other peripherals over the network. It is
// a plug-in of the peripherals runtime like the disk and the display; its
// control ops (OpStorage, OpAccessCheck, OpTransferStore, OpTransferOrder,
// OpDisplayStream) run the demos, and it serves iperf3 (StartIperf3).
//
// It speaks the other kinds' protocols from their wire formats
// (internal/wire) and never imports their servers: sub-packages hold the
// storage client (storage), the disks' file manager that mints their
// capabilities (manager), third-party transfer orders (transfer), the
// tile streamer (render), workload generators (workload) and the iperf3
// server (iperf3). It finds disks and displays by name in its membership
// view (peripherals.Runtime.FindPeer).
package cpu
