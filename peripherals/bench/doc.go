// Package bench measures UDP throughput, loss, jitter and round-trip time
// between two peers, with the same code over the user-level stack and the
// kernel's sockets. Every peripheral serves it (the runtime registers its
// receiver, sender and echo on the control socket: peripherals.BenchArgs),
// and the CLI's `netstation bench` drives it between any two of them.
//
// A Sender streams datagrams carrying a small header (test id, stream,
// sequence number, send timestamp) to a Receiver, which counts them,
// infers loss and reordering from the sequence numbers and computes the
// RFC 3550 interarrival jitter from the timestamps. RTT ping-pongs small
// datagrams against an Echo responder, retransmitting after a timeout so
// one lost datagram costs a retry, never a hang.
//
// Both sides talk through Conn, a batch datagram interface: User adapts a
// *stack.UDPConn (it already is one) and Kernel adapts a *net.UDPConn
// through recvmmsg/sendmmsg. Results merge into a Report shaped like
// iperf3's JSON (start / intervals / end) with our extras under the
// "netstation" key, and print like iperf3's UDP text output. Plot draws
// throughput against datagram size for several stacks into a PNG.
//
// The end of a test travels in-band: each stream ends with a FIN datagram
// holding the number of datagrams it sent (so tail loss is counted), which
// the receiver acknowledges; the sender retransmits unacknowledged FINs a
// bounded number of times, and the receiver also stops after an idle
// timeout, so a lost FIN delays the end but never hangs it. Before it
// starts, a sender probes the receiver with a ping (RunReceiver answers
// pings): that tells it a receiver is listening (Result.Reached) and, like
// iperf3's control connection, resolves the peer's link address so the
// first burst is not dropped in a neighbour queue.
//
// A sender with a credit window (SenderOptions.Window, what `netstation
// bench` runs by default) is slowed by its receiver instead of outrunning
// it: its data asks the receiver to report, every quarter window, how far
// the receiving application has read (the stream's next expected sequence
// number: read or lost), and each stream stays at most Window datagrams
// ahead of the last report. A stream held back asks for a report itself
// after a while (creditProbeAfter, backing off): the receiver reads that
// request after everything sent before it, so its answer also frees a
// window whose last datagrams were lost. The figures stay what the
// receiver kept; only the sender's pace changes.
//
// On a user-level socket the receiver reads the stack's zero-copy runs
// (stack.UDPConn.ReadRuns/Release: a GSO super-frame's datagrams end to
// end, as the kernel baseline reads UDP_GRO buffers) instead of copying
// each datagram out of the socket's ring, and the sender writes each
// super-frame's worth of datagrams in place (stack.UDPConn.BeginRun/EndRun:
// it writes every datagram's header where the datagram leaves from and
// leaves the payload bytes as they are, zeros, as in the buffers the
// kernel baseline's sendmmsg copies from).
//
// A run, side by side (start the receiver first):
//
//	recv, _ := bench.RunReceiver(ctx, bench.Kernel(udpConn), bench.ReceiverOptions{Stack: "kernel"})
//	sent, _ := bench.RunSender(ctx, bench.User(sock), dst, bench.SenderOptions{Size: 1472, Duration: 10 * time.Second})
//	rep := bench.Merge(sent, recv) // either may be nil when each side runs elsewhere
//	rep.Text(os.Stdout)            // or rep.JSON() for -J
package bench
