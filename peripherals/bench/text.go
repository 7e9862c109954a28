package bench

import (
	"fmt"
	"io"
	"strings"
)

// unitBytes formats a byte count as iperf3 does ('A': 1024-based).
func unitBytes(b float64) string { return unit(b, 1024, "Bytes") }

// unitBits formats a bit rate as iperf3 does ('a': 1000-based).
func unitBits(b float64) string { return unit(b, 1000, "bits") }

func unit(v, base float64, suffix string) string {
	prefixes := []string{" ", " K", " M", " G", " T"}
	i := 0
	for v >= base && i < len(prefixes)-1 {
		v /= base
		i++
	}
	var num string
	switch {
	case v < 9.995:
		num = fmt.Sprintf("%4.2f", v)
	case v < 99.95:
		num = fmt.Sprintf("%4.1f", v)
	default:
		num = fmt.Sprintf("%4.0f", v)
	}
	return num + prefixes[i] + suffix
}

const (
	headerSent     = "[ ID] Interval           Transfer     Bitrate         Total Datagrams\n"
	headerReceived = "[ ID] Interval           Transfer     Bitrate         Jitter    Lost/Total Datagrams\n"
)

func id(f Figures) string {
	if f.Socket == 0 {
		return "SUM"
	}
	return fmt.Sprintf("%3d", f.Socket)
}

// line prints one iperf3 UDP line: with loss figures like the receiver's
// lines, without like the sender's.
func line(w io.Writer, f Figures, tag string) {
	head := fmt.Sprintf("[%s] %6.2f-%-6.2f sec  %s  %s/sec", id(f), f.Start, f.End, unitBytes(float64(f.Bytes)), unitBits(f.BitsPerSecond))
	if f.LossFigures == nil {
		fmt.Fprintf(w, "%s  %d  %s\n", head, f.Packets, tag)
		return
	}
	fmt.Fprintf(w, "%s  %5.3f ms  %d/%d (%.2g%%)  %s\n", head, f.JitterMs, f.LostPackets, f.Packets, f.LostPercent, tag)
}

// WriteInterval prints one live interval as iperf3 prints it as it runs:
// a line per stream, then a [SUM] line when there are several. receiver
// selects the jitter/loss columns.
func WriteInterval(w io.Writer, iv Interval, receiver bool) {
	if len(iv.Streams) != 1 {
		for _, s := range iv.Streams {
			line(w, figures(s, !receiver, receiver), "")
		}
	}
	f := figures(iv.Sum, !receiver, receiver)
	if len(iv.Streams) == 1 {
		f = figures(iv.Streams[0], !receiver, receiver)
	}
	line(w, f, "")
}

// IntervalHeader is the column header WriteInterval's lines go under.
func IntervalHeader(receiver bool) string {
	if receiver {
		return headerReceived
	}
	return headerSent
}

// Text prints the report like iperf3's UDP text output: the connection,
// the interval lines, then the sender and receiver summaries, followed by
// netstation's extras.
func (r *Report) Text(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "Connecting to host %s, port %d\n", r.Start.ConnectingTo.Host, r.Start.ConnectingTo.Port)
	for _, c := range r.Start.Connected {
		fmt.Fprintf(&b, "[%3d] local %s port %d connected to %s port %d\n", c.Socket, c.LocalHost, c.LocalPort, c.RemoteHost, c.RemotePort)
	}
	if len(r.Intervals) > 0 {
		b.WriteString(IntervalHeader(r.Intervals[0].Sum.LossFigures != nil))
		for _, iv := range r.Intervals {
			for _, s := range iv.Streams {
				line(&b, s, "")
			}
			if len(iv.Streams) > 1 {
				line(&b, iv.Sum, "")
			}
		}
	}
	b.WriteString("- - - - - - - - - - - - - - - - - - - - - - - - -\n")
	b.WriteString(headerReceived)
	if r.Netstation.HaveSender {
		line(&b, r.End.SumSent, "sender")
	}
	if r.Netstation.HaveReceiver {
		line(&b, r.End.SumReceived, "receiver")
	}
	n := r.Netstation
	fmt.Fprintf(&b, "netstation: stack %s", n.Stack)
	if n.HaveSender {
		fmt.Fprintf(&b, ", sent %.0f pps", n.PacketsPerSecondSent)
	}
	if n.HaveReceiver {
		fmt.Fprintf(&b, ", received %.0f pps", n.PacketsPerSecondReceived)
	}
	if n.WriteErrors > 0 {
		fmt.Fprintf(&b, ", %d write errors", n.WriteErrors)
	}
	if n.Pacing != "" {
		fmt.Fprintf(&b, ", %s", n.Pacing)
	}
	if n.CreditWindow > 0 {
		fmt.Fprintf(&b, " (held back %d times, %d progress reports asked for)", n.CreditWaits, n.CreditProbes)
	}
	b.WriteString("\n")
	if n.SenderCPU != nil || n.ReceiverCPU != nil {
		b.WriteString("cpu:")
		if c := n.SenderCPU; c != nil {
			fmt.Fprintf(&b, " sender %.2f s (user %.2f, system %.2f)", c.Total().Seconds(), c.User.Seconds(), c.System.Seconds())
		}
		if c := n.ReceiverCPU; c != nil {
			fmt.Fprintf(&b, " receiver %.2f s (user %.2f, system %.2f)", c.Total().Seconds(), c.User.Seconds(), c.System.Seconds())
		}
		if n.CPUSecondsPerGB > 0 {
			fmt.Fprintf(&b, "; both ends %.3f CPU-s per GB received, %.0f CPU-ns per datagram", n.CPUSecondsPerGB, n.CPUNanosPerDatagram)
		}
		b.WriteString("\n")
	}
	if n.KernelMode != "" {
		fmt.Fprintf(&b, "kernel sockets (%s): %.1f datagrams per sent message, %.1f per received buffer\n",
			n.KernelMode, n.DatagramsPerSend, n.DatagramsPerReceive)
	}
	if n.HaveReceiver && r.End.SumReceived.LossFigures != nil {
		ring := ""
		if n.ReceiverRingDropFrames > 0 {
			ring = fmt.Sprintf("; its ring dropped %d frames", n.ReceiverRingDropFrames)
		}
		fmt.Fprintf(&b, "loss: %d on the way (fabric, veth backlogs), %d (%.2f%%) dropped by the receiver itself (socket queue or ring full%s)\n",
			n.LinkLost, n.ReceiverOverflow, n.ReceiverOverflowPercent, ring)
		if n.ReceiverOverflowPercent > OverflowWarnPercent {
			fmt.Fprintf(&b, "WARNING: the receiver dropped %.1f%% of what was sent: the sender outran it; the throughput above is what it kept\n", n.ReceiverOverflowPercent)
		}
	}
	for i, rt := range []*RTTFigures{n.RTT, n.RTTCrossCPU, n.RTTBusyPoll, n.RTTBusyPollCrossCPU} {
		if rt == nil {
			continue
		}
		pin := ""
		if rt.Pinning != "" {
			pin = " (" + rt.Pinning + ")"
		}
		if i >= 2 {
			pin = " busy-polling" + pin
		}
		fmt.Fprintf(&b, "rtt %d B%s: %d/%d answered, %d lost, %d retransmits; min %.1f p50 %.1f p90 %.1f p99 %.1f p99.9 %.1f max %.1f us\n",
			rt.Size, pin, rt.Answered, rt.Pings, rt.Lost, rt.Retransmits, rt.MinUs, rt.P50Us, rt.P90Us, rt.P99Us, rt.P999Us, rt.MaxUs)
	}
	if n.RTTBusyPollError != "" {
		fmt.Fprintf(&b, "rtt busy-polling: not measured: %s\n", n.RTTBusyPollError)
	}
	_, err := io.WriteString(w, b.String())
	return err
}
