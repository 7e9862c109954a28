package bench

import (
	"encoding/json"
	"net/netip"
	"time"
)

// Version is reported in start.version.
const Version = "netstation bench 1"

// Report is one test's figures in iperf3's JSON shape (field names as in
// iperf3's iperf_api.c for UDP), with netstation's extras under
// "netstation". It is plain data: build it with Merge, then JSON or Text.
type Report struct {
	Start      ReportStart      `json:"start"`
	Intervals  []ReportInterval `json:"intervals"`
	End        ReportEnd        `json:"end"`
	Netstation Extras           `json:"netstation"`
}

// ReportStart is iperf3's "start" object.
type ReportStart struct {
	Connected    []Connected `json:"connected"`
	Version      string      `json:"version"`
	SystemInfo   string      `json:"system_info"`
	Timestamp    Timestamp   `json:"timestamp"`
	ConnectingTo HostPort    `json:"connecting_to"`
	TestStart    TestStart   `json:"test_start"`
}

// Connected is one stream's socket pair.
type Connected struct {
	Socket     int    `json:"socket"`
	LocalHost  string `json:"local_host"`
	LocalPort  int    `json:"local_port"`
	RemoteHost string `json:"remote_host"`
	RemotePort int    `json:"remote_port"`
}

// Timestamp is when the test started.
type Timestamp struct {
	Time     string `json:"time"` // RFC 1123, UTC, as iperf3 prints it
	Timesecs int64  `json:"timesecs"`
}

// HostPort is the receiver's address.
type HostPort struct {
	Host string `json:"host"`
	Port int    `json:"port"`
}

// TestStart is the test's parameters.
type TestStart struct {
	Protocol      string  `json:"protocol"`
	NumStreams    int     `json:"num_streams"`
	Blksize       int     `json:"blksize"`
	Omit          int     `json:"omit"`
	Duration      float64 `json:"duration"` // seconds; 0 when a count bounded the test
	Bytes         uint64  `json:"bytes"`
	Blocks        uint64  `json:"blocks"`
	Reverse       int     `json:"reverse"`
	TargetBitrate float64 `json:"target_bitrate"`
}

// Figures are one stream's or one sum's numbers over a span, named as
// iperf3 names them. The loss fields exist only where a receiver measured
// them, as in iperf3's sender-side intervals.
type Figures struct {
	Socket        int     `json:"socket,omitempty"`
	Start         float64 `json:"start"`
	End           float64 `json:"end"`
	Seconds       float64 `json:"seconds"`
	Bytes         uint64  `json:"bytes"`
	BitsPerSecond float64 `json:"bits_per_second"`
	*LossFigures
	Packets uint64 `json:"packets"`
	Omitted bool   `json:"omitted"`
	Sender  bool   `json:"sender"`
}

// LossFigures are the receiver's part of Figures.
type LossFigures struct {
	JitterMs    float64 `json:"jitter_ms"`
	LostPackets uint64  `json:"lost_packets"`
	LostPercent float64 `json:"lost_percent"`
	OutOfOrder  uint64  `json:"out_of_order"`
}

// ReportInterval is one element of "intervals".
type ReportInterval struct {
	Streams []Figures `json:"streams"`
	Sum     Figures   `json:"sum"`
}

// StreamEnd is one element of end.streams: iperf3 nests UDP streams under
// "udp".
type StreamEnd struct {
	UDP Figures `json:"udp"`
}

// ReportEnd is iperf3's "end" object for UDP.
type ReportEnd struct {
	Streams     []StreamEnd `json:"streams"`
	Sum         Figures     `json:"sum"`
	SumSent     Figures     `json:"sum_sent"`
	SumReceived Figures     `json:"sum_received"`
}

// Extras are figures iperf3 does not have.
type Extras struct {
	Stack                    string  `json:"stack"`
	Test                     uint32  `json:"test_id"`
	PacketsPerSecondSent     float64 `json:"packets_per_second_sent"`
	PacketsPerSecondReceived float64 `json:"packets_per_second_received"`
	BitsPerSecondReceived    float64 `json:"bits_per_second_received"`
	WriteErrors              uint64  `json:"write_errors"`
	FINAcked                 bool    `json:"fin_acked"`
	Ignored                  uint64  `json:"ignored_datagrams"`
	HaveSender, HaveReceiver bool    `json:"-"`
	// Pacing says how the sender's rate was chosen: unpaced, paced at a
	// fixed rate, or held by the receiver's credit (the default).
	Pacing string `json:"pacing,omitempty"`
	// CreditWindow is the datagrams a stream could be ahead of what the
	// receiving application read (0: no credit); CreditWaits counts the
	// times the window held the sender back, CreditProbes the progress
	// reports it asked for after waiting.
	CreditWindow int    `json:"credit_window,omitempty"`
	CreditWaits  uint64 `json:"credit_waits,omitempty"`
	CreditProbes uint64 `json:"credit_probes,omitempty"`
	// The receiver's loss split by where it happened: datagrams its own
	// socket or ring dropped (overflow), and the rest (on the link).
	ReceiverOverflow        uint64  `json:"receiver_overflow_packets"`
	ReceiverRingDropFrames  uint64  `json:"receiver_ring_drop_frames,omitempty"`
	ReceiverOverflowPercent float64 `json:"receiver_overflow_percent"`
	LinkLost                uint64  `json:"link_lost_packets"`
	// Kernel sockets: how batches went (datagrams per sendmmsg message
	// and per received buffer: above 1 only with UDP_SEGMENT / UDP_GRO).
	KernelMode          string  `json:"kernel_mode,omitempty"`
	DatagramsPerSend    float64 `json:"datagrams_per_send,omitempty"`
	DatagramsPerReceive float64 `json:"datagrams_per_receive,omitempty"`
	// RTT is the request/response run with both ends pinned to one CPU,
	// RTTCrossCPU with the ends pinned to different CPUs (see Pinning).
	RTT         *RTTFigures `json:"rtt,omitempty"`
	RTTCrossCPU *RTTFigures `json:"rtt_cross_cpu,omitempty"`
	// RTTBusyPoll and RTTBusyPollCrossCPU are a kernel run's round trips
	// again on busy-polling sockets (SO_BUSY_POLL with the user-level
	// readers' poll budget: the kernel at its best for latency), in the
	// same two pinnings; RTTBusyPollError says why they are missing when
	// they were asked for.
	RTTBusyPoll         *RTTFigures `json:"rtt_busypoll,omitempty"`
	RTTBusyPollCrossCPU *RTTFigures `json:"rtt_busypoll_cross_cpu,omitempty"`
	RTTBusyPollError    string      `json:"rtt_busypoll_error,omitempty"`
	// CPU cost: each end's process CPU time during the run (user +
	// system, getrusage), and both ends' sum per GB of payload received
	// and per datagram received, so a faster stack cannot hide a second
	// core it burns. Zero when a side did not measure it.
	SenderCPU           *CPUTime `json:"sender_cpu,omitempty"`
	ReceiverCPU         *CPUTime `json:"receiver_cpu,omitempty"`
	CPUSecondsPerGB     float64  `json:"cpu_seconds_per_gb,omitempty"`
	CPUNanosPerDatagram float64  `json:"cpu_ns_per_datagram,omitempty"`
}

// OverflowWarnPercent is the receiver overflow above which a run's
// figure is flagged: the sender outran the receiver, and the throughput
// is what the receiver kept.
const OverflowWarnPercent = 2.0

// RTTFigures summarise a request/response run, in microseconds.
type RTTFigures struct {
	Pinning     string  `json:"pinning"` // where both ends ran, e.g. "both ends on CPU 0"
	Size        int     `json:"size"`
	Pings       uint64  `json:"pings"`
	Answered    int     `json:"answered"`
	Lost        uint64  `json:"lost"`
	Retransmits uint64  `json:"retransmits"`
	MinUs       float64 `json:"min_us"`
	MeanUs      float64 `json:"mean_us"`
	P50Us       float64 `json:"p50_us"`
	P90Us       float64 `json:"p90_us"`
	P99Us       float64 `json:"p99_us"`
	P999Us      float64 `json:"p99_9_us"`
	MaxUs       float64 `json:"max_us"`
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// figures converts totals; loss says whether the receiver's fields apply.
func figures(t Totals, sender, loss bool) Figures {
	f := Figures{
		Start: t.Start.Seconds(), End: t.End.Seconds(), Seconds: t.Seconds(),
		Bytes: t.Bytes, BitsPerSecond: t.BitsPerSecond(), Packets: t.Packets, Sender: sender,
	}
	if t.Stream >= 0 {
		f.Socket = t.Stream + 1 // iperf3 numbers sockets; 0 would vanish
	}
	if loss {
		f.Packets = t.Expected()
		f.LossFigures = &LossFigures{JitterMs: ms(t.Jitter), LostPackets: t.Lost, LostPercent: t.LostPercent(), OutOfOrder: t.OutOfOrder}
	}
	return f
}

// Merge combines the two sides of one test into a Report; either may be
// nil (a side run alone). Intervals come from the receiver when there is
// one, since only it sees loss and jitter.
func Merge(sender, receiver *Result) *Report {
	r := &Report{}
	r.Start.Version = Version
	r.Start.SystemInfo = systemInfo()
	r.Start.TestStart.Protocol = "UDP"
	r.Netstation.HaveSender = sender != nil
	r.Netstation.HaveReceiver = receiver != nil
	main := sender
	if main == nil {
		main = receiver
	}
	if main == nil {
		return r
	}
	r.Netstation.Stack = main.Stack
	r.Netstation.Test = main.Test
	r.Start.Timestamp = Timestamp{Time: main.Started.UTC().Format(time.RFC1123), Timesecs: main.Started.Unix()}
	r.Start.TestStart.NumStreams = main.Parallel
	r.Start.TestStart.Blksize = main.Size
	local, remote := main.Local, main.Remote
	if main == receiver {
		local, remote = remote, local // describe the test from the sender's side, like iperf3's client
	}
	r.Start.ConnectingTo = HostPort{Host: remote.Addr().String(), Port: int(remote.Port())}
	for i := 0; i < main.Parallel; i++ {
		r.Start.Connected = append(r.Start.Connected, Connected{
			Socket: i + 1, LocalHost: addrString(local.Addr()), LocalPort: int(local.Port()),
			RemoteHost: addrString(remote.Addr()), RemotePort: int(remote.Port())})
	}
	if sender != nil {
		r.Start.TestStart.Duration = sender.Duration.Seconds()
		r.Start.TestStart.TargetBitrate = sender.Rate
		r.Netstation.PacketsPerSecondSent = sender.Sum.PacketsPerSecond()
		r.Netstation.WriteErrors = sender.WriteErrors
		r.Netstation.CreditWindow = sender.Window
		r.Netstation.CreditWaits = sender.CreditWaits
		r.Netstation.CreditProbes = sender.CreditProbes
		r.Netstation.FINAcked = sender.FINAcked
		r.End.SumSent = figures(sender.Sum, true, false)
		r.End.SumSent.LossFigures = &LossFigures{}
	}
	if sender != nil && sender.Offload != nil {
		r.Netstation.KernelMode = sender.Offload.Mode
		if sender.Offload.Messages > 0 {
			r.Netstation.DatagramsPerSend = float64(sender.Offload.Datagrams) / float64(sender.Offload.Messages)
		}
	}
	if receiver != nil && receiver.Offload != nil {
		r.Netstation.KernelMode = receiver.Offload.Mode
		if receiver.Offload.Messages > 0 {
			r.Netstation.DatagramsPerReceive = float64(receiver.Offload.Datagrams) / float64(receiver.Offload.Messages)
		}
	}
	if receiver != nil {
		ov := receiver.Overflow.Datagrams()
		r.Netstation.ReceiverOverflow = ov
		r.Netstation.ReceiverRingDropFrames = receiver.Overflow.Ring
		if e := receiver.Sum.Expected(); e > 0 {
			r.Netstation.ReceiverOverflowPercent = 100 * float64(min(ov, e)) / float64(e)
		}
		r.Netstation.LinkLost = sub(receiver.Sum.Lost, ov)
		r.Netstation.PacketsPerSecondReceived = receiver.Sum.PacketsPerSecond()
		r.Netstation.BitsPerSecondReceived = receiver.Sum.BitsPerSecond()
		r.Netstation.Ignored = receiver.Ignored
		r.End.SumReceived = figures(receiver.Sum, false, true)
	}
	if sender != nil && sender.CPU.Total() > 0 {
		c := sender.CPU
		r.Netstation.SenderCPU = &c
	}
	if receiver != nil && receiver.CPU.Total() > 0 {
		c := receiver.CPU
		r.Netstation.ReceiverCPU = &c
	}
	if sender != nil && receiver != nil && r.Netstation.SenderCPU != nil && r.Netstation.ReceiverCPU != nil {
		cpu := (sender.CPU.Total() + receiver.CPU.Total()).Seconds()
		if receiver.Sum.Packets > 0 {
			r.Netstation.CPUNanosPerDatagram = cpu * 1e9 / float64(receiver.Sum.Packets)
		}
		if receiver.Sum.Bytes > 0 {
			r.Netstation.CPUSecondsPerGB = cpu / (float64(receiver.Sum.Bytes) / 1e9)
		}
	}
	ivSrc, loss := main, main == receiver
	if receiver != nil {
		ivSrc, loss = receiver, true
	}
	for _, iv := range ivSrc.Intervals {
		ri := ReportInterval{Sum: figures(iv.Sum, !loss, loss)}
		for _, s := range iv.Streams {
			ri.Streams = append(ri.Streams, figures(s, !loss, loss))
		}
		r.Intervals = append(r.Intervals, ri)
	}
	// end.streams and end.sum: the sender's bytes, time and packet count
	// (what was offered) with the receiver's loss and jitter, as iperf3.
	for i := 0; i < main.Parallel; i++ {
		var f Figures
		switch {
		case sender != nil && receiver != nil && i < len(sender.Streams) && i < len(receiver.Streams):
			f = figures(sender.Streams[i], true, false)
			rs := receiver.Streams[i]
			f.LossFigures = &LossFigures{JitterMs: ms(rs.Jitter), LostPackets: rs.Lost, OutOfOrder: rs.OutOfOrder}
			if f.Packets > 0 {
				f.LostPercent = 100 * float64(rs.Lost) / float64(f.Packets)
			}
		case sender != nil && i < len(sender.Streams):
			f = figures(sender.Streams[i], true, false)
			f.LossFigures = &LossFigures{}
		case receiver != nil && i < len(receiver.Streams):
			f = figures(receiver.Streams[i], false, true)
		}
		r.End.Streams = append(r.End.Streams, StreamEnd{UDP: f})
	}
	switch {
	case sender != nil && receiver != nil:
		r.End.Sum = figures(sender.Sum, true, false)
		rs := receiver.Sum
		r.End.Sum.LossFigures = &LossFigures{JitterMs: ms(rs.Jitter), LostPackets: rs.Lost, OutOfOrder: rs.OutOfOrder}
		if r.End.Sum.Packets > 0 {
			r.End.Sum.LostPercent = 100 * float64(rs.Lost) / float64(r.End.Sum.Packets)
		}
	case sender != nil:
		r.End.Sum = r.End.SumSent
	default:
		r.End.Sum = r.End.SumReceived
	}
	return r
}

func addrString(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

// WithRTT adds a request/response run's figures under netstation.rtt and
// returns r.
func (r *Report) WithRTT(rt *RTTResult) *Report {
	r.Netstation.RTT = rt.Figures("")
	if rt != nil && r.Netstation.Stack == "" {
		r.Netstation.Stack = rt.Stack
	}
	return r
}

// Figures summarises the run, labelled with where its ends ran; nil for
// a nil result.
func (rt *RTTResult) Figures(pinning string) *RTTFigures {
	if rt == nil {
		return nil
	}
	var lo, hi time.Duration
	if n := len(rt.Samples); n > 0 {
		lo, hi = rt.Samples[0], rt.Samples[n-1]
	}
	return &RTTFigures{
		Pinning: pinning, Size: rt.Size, Pings: rt.Pings, Answered: len(rt.Samples), Lost: rt.Lost, Retransmits: rt.Retransmits,
		MinUs: us(lo), MeanUs: us(rt.Mean()), P50Us: us(rt.Percentile(50)), P90Us: us(rt.Percentile(90)),
		P99Us: us(rt.Percentile(99)), P999Us: us(rt.Percentile(99.9)), MaxUs: us(hi),
	}
}

// JSON returns the report indented, as iperf3 -J prints it.
func (r *Report) JSON() ([]byte, error) {
	return json.MarshalIndent(r, "", "\t")
}
