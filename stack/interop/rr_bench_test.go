package interop

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/netstation/netstation/internal/cpupin"
	"github.com/netstation/netstation/internal/nstest"
	"github.com/netstation/netstation/stack"
	"github.com/netstation/netstation/stack/link"
	"github.com/netstation/netstation/stack/link/afpacket"
	"github.com/netstation/netstation/stack/link/afxdp"
	"github.com/vishvananda/netns"
)

// echoEnv, when set in the environment, turns the test binary into the
// echo end of BenchmarkRR (a process of its own, so it can be pinned to a
// CPU apart from the client: see echoMain).
const echoEnv = "NETSTATION_INTEROP_ECHO"

// rrExchanges is the fewest round trips a latency figure is taken from.
const rrExchanges = 10000

// rrPollBudget is stack.Config.PollBudget of the "user-poll" stacks: how
// long a reader with nothing queued drives the link itself. Above a
// cross-CPU round trip, so the reply is usually caught by the poller.
const rrPollBudget = 200 * time.Microsecond

// rrClientMAC and rrEchoMAC are the Ethernet addresses of the user-level
// stacks at the two ends, not their veths': the frames to each are then
// PACKET_OTHERHOST in its namespace, which the kernel's IP receive drops at
// its first check (ip_rcv_core) after the packet socket's tap has its copy.
// With the veth's own address each frame went on to be routed (a route
// built and freed per frame, the namespace holding no such address) inside
// the sender's sendmmsg (veth runs the peer's receive there): 0.44 us of
// it, which on one CPU the peer's poller waits out. Testbeds spare their
// kernels the same way with a tc program (tcbpf.AttachStackDrop).
var (
	rrClientMAC = net.HardwareAddr{0x02, 0x72, 0x72, 0, 0, 1}
	rrEchoMAC   = net.HardwareAddr{0x02, 0x72, 0x72, 0, 0, 2}
)

// echoConfig tells the echo process what to serve and where.
type echoConfig struct {
	Stack  string        // "user" or "kernel"
	Link   string        // user: "afpacket" (default), "xsk" or "framering"
	Poll   time.Duration // user: stack.Config.PollBudget
	NS     string        // namespace name
	IfName string        // user: the veth its stack opens
	MAC    string        // user: the veth's MAC
	Addr   netip.Prefix  // the echo end's address
	Port   uint16        // TCP and UDP
	CPU    int           // every thread of the process pinned here
}

func TestMain(m *testing.M) {
	if cfg := os.Getenv(echoEnv); cfg != "" {
		if err := echoMain(cfg); err != nil {
			fmt.Fprintln(os.Stderr, "echo:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// echoMain pins the whole process to one CPU, serves TCP and UDP echo of
// 64-byte messages on the configured stack inside the namespace, prints
// "ready" and runs until its stdin closes.
func echoMain(js string) error {
	var c echoConfig
	if err := json.Unmarshal([]byte(js), &c); err != nil {
		return err
	}
	if err := cpupin.Process([]int{c.CPU}); err != nil {
		return err
	}
	// One CPU, one P: what the runtime would settle on by itself a
	// second or so after the pinning (GOMAXPROCS follows the affinity
	// mask), and what peripherals run with. A second P has nothing to run
	// on but the same CPU: its thread, parked in epoll_wait, is woken by
	// every arriving frame and preempts whatever runs there.
	runtime.GOMAXPROCS(1)
	var (
		tl net.Listener
		uc net.PacketConn
	)
	ap := netip.AddrPortFrom(c.Addr.Addr(), c.Port)
	err := inNS(c.NS, func() error {
		switch c.Stack {
		case "user":
			mac, err := net.ParseMAC(c.MAC)
			if err != nil {
				return err
			}
			l, err := openRRLink(c.Link, c.IfName)
			if err != nil {
				return err
			}
			st, err := stack.New(l, stack.Config{MAC: mac, Addr: c.Addr, MTU: 1500, PollBudget: c.Poll})
			if err != nil {
				return err
			}
			if tl, err = st.ListenTCP(ap); err != nil {
				return err
			}
			u, err := st.ListenUDP(ap)
			uc = u
			return err
		case "kernel-busypoll":
			if err := enableNAPI(c.IfName); err != nil {
				return err
			}
			return busyPollEcho(ap)
		case "kernel":
			var err error
			if tl, err = net.Listen("tcp4", ap.String()); err != nil {
				return err
			}
			uc, err = net.ListenPacket("udp4", ap.String())
			return err
		}
		return fmt.Errorf("unknown stack %q", c.Stack)
	})
	if err != nil {
		return err
	}
	if c.Stack == "kernel-busypoll" {
		fmt.Println("ready")
		io.Copy(io.Discard, os.Stdin)
		return nil
	}
	go func() {
		for {
			s, err := tl.Accept()
			if err != nil {
				return
			}
			go func() {
				buf := make([]byte, 64)
				for {
					if _, err := io.ReadFull(s, buf); err != nil {
						return
					}
					if _, err := s.Write(buf); err != nil {
						return
					}
				}
			}()
		}
	}()
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := uc.ReadFrom(buf)
			if err != nil {
				return
			}
			uc.WriteTo(buf[:n], from)
		}
	}()
	fmt.Println("ready")
	io.Copy(io.Discard, os.Stdin)
	return nil
}

// openRRLink opens the link of a "user" end of BenchmarkRR on ifname, in
// the calling thread's namespace: kind "afpacket" (or "") is the default
// afpacket link; "xsk" the full AF_XDP link (XSK transmit, XDP program
// redirecting every frame to the XSK's receive ring); "framering" afpacket
// with its TPACKET_V2 receive ring (afpacket.RxFrameRing) and sendmmsg.
func openRRLink(kind, ifname string) (link.Link, error) {
	switch kind {
	case "", "afpacket":
		return afpacket.Open(ifname, afpacket.Options{})
	case "xsk":
		return afxdp.Open(ifname, afxdp.Options{Rx: afxdp.RxXSK})
	case "framering":
		// sendmmsg, not the transmit ring: a lone frame by one call to
		// packet_snd costs less than tpacket_snd's walk of the ring
		// (docs/ARCHITECTURE.md, "Request/response latency").
		return afpacket.Open(ifname, afpacket.Options{Rx: afpacket.RxFrameRing, Tx: afpacket.TxSendmmsg})
	}
	return nil, fmt.Errorf("unknown link %q", kind)
}

// inNS runs fn on a locked thread inside the named namespace.
func inNS(name string, fn func() error) error {
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return err
	}
	target, err := netns.GetFromName(name)
	if err != nil {
		return err
	}
	if err := netns.Set(target); err != nil {
		return err
	}
	ferr := fn()
	if err := netns.Set(orig); err != nil {
		return err // the thread stays locked and dies with the goroutine
	}
	runtime.UnlockOSThread()
	return ferr
}

// rrPair is a client in this process and the echo end in a child process,
// over a veth between two namespaces of the benchmark's own.
type rrPair struct {
	echoPID int
	tcp     net.Conn
	udp     interface {
		WriteToUDPAddrPort([]byte, netip.AddrPort) (int, error)
		ReadFromUDPAddrPort([]byte) (int, netip.AddrPort, error)
		SetReadDeadline(time.Time) error
	}
	dst netip.AddrPort
	bp  *busyPollClient // kernel-busypoll: the client's sockets
	// req and resp are the client's messages, here rather than on
	// tcpRTT's stack: a slice passed through an interface (net.Conn)
	// escapes, and two arrays allocated per exchange would be the
	// harness's allocations, not the stack's.
	req, resp [64]byte
}

// startRR builds the pair for stackName ("user", "user-poll": both ends
// with rrPollBudget, "user-xsk-poll": the same on the full AF_XDP link,
// "user-ring-poll": the same on afpacket's TPACKET_V2 ring, "kernel", or "kernel-busypoll": kernel sockets that busy-poll for
// rrPollBudget) with the echo process pinned to echoCPU.
func startRR(b *testing.B, stackName string, echoCPU int) *rrPair {
	var poll time.Duration
	linkKind := "afpacket"
	switch stackName {
	case "user-poll":
		stackName, poll = "user", rrPollBudget
	case "user-xsk-poll":
		stackName, poll, linkKind = "user", rrPollBudget, "xsk"
	case "user-ring-poll":
		stackName, poll, linkKind = "user", rrPollBudget, "framering"
	}
	a, e, la, le := endpoints(b, false, "rr")
	for _, x := range []*nstest.NS{a, e} {
		x.Run(b, 5*time.Second, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1")
	}
	cfg := echoConfig{Stack: stackName, Link: linkKind, Poll: poll, NS: e.Name, IfName: "b0", MAC: rrEchoMAC.String(), Port: 7007, CPU: echoCPU}
	clientAddr := userAddr
	cfg.Addr = user2Addr
	if stackName == "kernel" || stackName == "kernel-busypoll" {
		a.AddrAdd(b, la, "10.98.0.1/24")
		e.AddrAdd(b, le, "10.98.0.2/24")
		clientAddr, cfg.Addr = netip.MustParsePrefix("10.98.0.1/24"), netip.MustParsePrefix("10.98.0.2/24")
	}
	js, _ := json.Marshal(cfg)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), echoEnv+"="+string(js))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { stdin.Close(); cmd.Wait() })
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || line != "ready\n" {
		b.Fatalf("echo process: %q, %v", line, err)
	}
	p := &rrPair{dst: netip.AddrPortFrom(cfg.Addr.Addr(), cfg.Port), echoPID: cmd.Process.Pid}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if stackName == "user" {
		var st *stack.Stack
		if err := a.Do(func() error {
			l, err := openRRLink(linkKind, "a0")
			if err != nil {
				return err
			}
			if st, err = stack.New(l, stack.Config{MAC: rrClientMAC, Addr: clientAddr, MTU: 1500, PollBudget: poll}); err != nil {
				l.Close()
			}
			return err
		}); err != nil {
			b.Fatalf("client stack (%s link): %v", linkKind, err)
		}
		b.Cleanup(func() { st.Close() })
		c, err := st.DialTCP(ctx, netip.AddrPort{}, p.dst)
		if err != nil {
			b.Fatal(err)
		}
		u, err := st.ListenUDP(netip.AddrPortFrom(clientAddr.Addr(), 0))
		if err != nil {
			b.Fatal(err)
		}
		p.tcp, p.udp = c, u
	} else if stackName == "kernel-busypoll" {
		if err := a.Do(func() error {
			if err := enableNAPI("a0"); err != nil {
				return err
			}
			var err error
			p.bp, err = dialBusyPoll(clientAddr.Addr(), p.dst)
			return err
		}); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(p.bp.Close)
	} else if err := a.Do(func() error {
		c, err := (&net.Dialer{}).DialContext(ctx, "tcp4", p.dst.String())
		if err != nil {
			return err
		}
		u, err := net.ListenUDP("udp4", &net.UDPAddr{IP: clientAddr.Addr().AsSlice()})
		p.tcp, p.udp = c, u
		return err
	}); err != nil {
		b.Fatal(err)
	}
	if p.bp == nil {
		b.Cleanup(func() { p.tcp.Close(); p.udp.(io.Closer).Close() })
	}
	return p
}

// BenchmarkRR: 64-byte request, 64-byte response, one at a time, over TCP
// and over UDP, on our stacks and on kernel sockets in the same run, over
// at least 10,000 exchanges each, taken twice: every thread of the client
// process and of the echo process (a process of its own) pinned to one
// CPU, then to two different CPUs, each process with GOMAXPROCS=1 (one
// CPU each). Reports p50, p99 and p99.9 in microseconds; the
// sub-benchmark's name states the pinning. The user-poll stacks read with
// stack.Config.PollBudget (run to completion); their kernel counterpart,
// kernel-busypoll, reads blocking sockets with SO_BUSY_POLL for the same
// budget, through the veth's NAPI (GRO on). user-xsk-poll is user-poll on
// the full AF_XDP link (afxdp.RxXSK) at both ends: a poller reads the XSK's
// receive ring, shared memory, with no system call (the sender's CPU runs
// the veth's NAPI and XDP program in its transmit call). A copy-mode XSK
// cannot busy-poll: see package afxdp. user-ring-poll is user-poll on
// afpacket.RxFrameRing: a poller reads a TPACKET_V2 ring, whose slots the
// sender's own sendto fills (no XDP program, no copy but the ring's), and
// frames leave by one sendmmsg. B/op and allocs/op are the whole
// run's (b.N is 1 for at least rrExchanges exchanges): the harness allocates
// nothing per exchange (the messages live in rrPair; the busy-polling
// client reads instead of recvfrom, which allocates the sender's address),
// so a count that grows with the exchanges is the stack's.
func BenchmarkRR(b *testing.B) {
	cpus, err := cpupin.Allowed()
	if err != nil {
		b.Fatal(err)
	}
	type pinning struct {
		name           string
		client, server int
	}
	pins := []pinning{{"same-cpu", cpus[0], cpus[0]}}
	if len(cpus) > 1 {
		pins = append(pins, pinning{"cross-cpu", cpus[0], cpus[1]})
	}
	for _, proto := range []string{"tcp", "udp"} {
		for _, pin := range pins {
			for _, st := range []string{"user", "user-poll", "user-xsk-poll", "user-ring-poll", "kernel", "kernel-busypoll"} {
				b.Run(fmt.Sprintf("%s/%s/%s", proto, pin.name, st), func(b *testing.B) {
					p := startRR(b, st, pin.server)
					if err := cpupin.Process([]int{pin.client}); err != nil {
						b.Fatal(err)
					}
					runtime.GOMAXPROCS(1) // as in echoMain
					defer runtime.SetDefaultGOMAXPROCS()
					defer cpupin.Process(nil)
					rt := p.tcpRTT
					if proto == "udp" {
						rt = p.udpRTT
					}
					if p.bp != nil {
						rt = p.bp.tcpRTT
						if proto == "udp" {
							rt = p.bp.udpRTT
						}
					}
					for range 200 { // warm up: ARP, the connection's first segments
						if _, err := rt(); err != nil {
							b.Fatal(err)
						}
					}
					if p.bp != nil {
						fd := p.bp.tcp
						if proto == "udp" {
							fd = p.bp.udp
						}
						if err := busyPollCheck(fd); err != nil {
							b.Fatal(err)
						}
					}
					n := max(b.N, rrExchanges)
					samples := make([]time.Duration, 0, n)
					cpu0 := cpuTime(b, os.Getpid()) + cpuTime(b, p.echoPID)
					b.ResetTimer()
					for range n {
						d, err := rt()
						if err != nil {
							b.Fatal(err)
						}
						samples = append(samples, d)
					}
					b.StopTimer()
					cpu := cpuTime(b, os.Getpid()) + cpuTime(b, p.echoPID) - cpu0
					slices.Sort(samples)
					pct := func(q float64) float64 {
						return float64(samples[min(len(samples)-1, int(q*float64(len(samples))))]) / 1e3
					}
					var sum time.Duration
					for _, s := range samples {
						sum += s
					}
					b.ReportMetric(float64(sum)/float64(len(samples))/1e3, "us/rtt")
					b.ReportMetric(pct(0.50), "p50-us")
					b.ReportMetric(pct(0.99), "p99-us")
					b.ReportMetric(pct(0.999), "p99.9-us")
					b.ReportMetric(float64(len(samples)), "exchanges")
					// CPU time of both processes, every thread, per round
					// trip: what a latency costs (a polling reader spins).
					b.ReportMetric(float64(cpu)/float64(len(samples))/1e3, "cpu-us/rtt")
				})
			}
		}
	}
}

// cpuTime is the CPU time every thread of process pid has had so far
// (the first field of /proc/PID/task/TID/schedstat, in nanoseconds).
func cpuTime(tb testing.TB, pid int) time.Duration {
	dir := fmt.Sprintf("/proc/%d/task", pid)
	tasks, err := os.ReadDir(dir)
	if err != nil {
		tb.Fatal(err)
	}
	var sum time.Duration
	for _, t := range tasks {
		b, err := os.ReadFile(dir + "/" + t.Name() + "/schedstat")
		if err != nil {
			continue // the thread ended meanwhile
		}
		var ns int64
		if _, err := fmt.Sscan(string(b), &ns); err != nil {
			tb.Fatalf("%s/%s/schedstat: %v", dir, t.Name(), err)
		}
		sum += time.Duration(ns)
	}
	return sum
}

func (p *rrPair) tcpRTT() (time.Duration, error) {
	t0 := time.Now()
	if _, err := p.tcp.Write(p.req[:]); err != nil {
		return 0, err
	}
	if _, err := io.ReadFull(p.tcp, p.resp[:]); err != nil {
		return 0, err
	}
	return time.Since(t0), nil
}

func (p *rrPair) udpRTT() (time.Duration, error) {
	t0 := time.Now()
	if _, err := p.udp.WriteToUDPAddrPort(p.req[:], p.dst); err != nil {
		return 0, err
	}
	p.udp.SetReadDeadline(t0.Add(2 * time.Second))
	if _, _, err := p.udp.ReadFromUDPAddrPort(p.resp[:]); err != nil {
		return 0, fmt.Errorf("no answer (a lost datagram on a veth is a failure here): %w", err)
	}
	return time.Since(t0), nil
}
