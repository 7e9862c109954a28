package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/netstation/netstation/fabric/tcbpf"
	"github.com/netstation/netstation/testbed"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
)

// addStatusWatch gives the status command -w/--watch and --interval: the
// table redrawn with rates computed between two samples.
func addStatusWatch(c *cobra.Command) {
	var watch bool
	var interval string
	c.Flags().BoolVarP(&watch, "watch", "w", false, "redraw the table every interval, with rates (rx/tx pps, drops/s)")
	c.Flags().StringVar(&interval, "interval", "1s", "watch interval")
	once := c.RunE
	c.Use = "status [-t NAME] [-o table|json] [-w [--interval 1s]]"
	c.RunE = func(cmd *cobra.Command, args []string) error {
		if !watch {
			return once(cmd, args)
		}
		every, err := parseInterval(interval)
		if err != nil {
			return err
		}
		name, _ := cmd.Flags().GetString("testbed")
		if output, _ := cmd.Flags().GetString("output"); output != "table" && output != "" {
			return errors.New("status -w draws a table; -o json takes one sample")
		}
		return watchStatus(cmd.Context(), os.Stdout, name, every, isTTY(os.Stdout))
	}
}

// isTTY reports whether f is a terminal (the watch then redraws in place).
func isTTY(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// watchStatus samples the testbeds every interval and draws each with the
// rates since the previous sample, until ctx ends.
func watchStatus(ctx context.Context, w io.Writer, name string, every time.Duration, clear bool) error {
	prev := map[string]testbed.NodeStatus{}
	var prevAt time.Time
	for {
		names := []string{name}
		if name == "" {
			var err error
			if names, err = testbed.List(); err != nil {
				return err
			}
		}
		now := time.Now()
		var b strings.Builder
		if len(names) == 0 {
			fmt.Fprintln(&b, "no testbed is up")
		}
		for i, n := range names {
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			st, err := testbed.GetStatus(cctx, n)
			cancel()
			if i > 0 {
				fmt.Fprintln(&b)
			}
			if err != nil {
				fmt.Fprintln(&b, err)
				continue
			}
			printStatusRates(&b, st, prev, now.Sub(prevAt))
			for _, ns := range st.Nodes {
				prev[st.Name+"/"+ns.Name] = ns
			}
		}
		prevAt = now
		if clear {
			fmt.Fprint(w, "\033[H\033[2J")
		} else {
			fmt.Fprintf(w, "--- %s\n", now.Format(time.TimeOnly))
		}
		fmt.Fprint(w, b.String())
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(every):
		}
	}
}

// rate is the per-second change of a counter; zero when there is no
// previous sample or the counter went back (a restarted peripheral).
func rate(cur, old uint64, dt time.Duration, have bool) float64 {
	if !have || dt <= 0 || cur < old {
		return 0
	}
	return float64(cur-old) / dt.Seconds()
}

func printStatusRates(w io.Writer, st testbed.Status, prev map[string]testbed.NodeStatus, dt time.Duration) {
	fmt.Fprintf(w, "testbed %s (%s): %s, templates %s", st.Name, st.Subnet, st.Phase, st.Templates)
	if st.Error != "" {
		fmt.Fprintf(w, ": %s", st.Error)
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tKIND\tIP\tSTATE\tRESTARTS\tRX PPS\tTX PPS\tDROPS/S\tRX\tTX\tDROPS\tSPOOF DROPS\tLINK")
	for _, n := range st.Nodes {
		p, have := prev[st.Name+"/"+n.Name]
		link, spoof := "", uint64(0)
		if n.Link != nil {
			link, spoof = formatLink(n.Link.Params), n.Link.TemplateDrops
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%.0f\t%.0f\t%.0f\t%d\t%d\t%d\t%d\t%s\n", n.Name, n.Kind, n.IP, n.State, n.Restarts,
			rate(n.RX, p.RX, dt, have), rate(n.TX, p.TX, dt, have), rate(n.Drops, p.Drops, dt, have),
			n.RX, n.TX, n.Drops, spoof, link)
	}
	tw.Flush()
}

func newMetricsCmd() *cobra.Command {
	var name, listen string
	c := &cobra.Command{
		Use:   "metrics [--listen 127.0.0.1:9100] [-t NAME]",
		Short: "Serve every testbed's counters in Prometheus text format on /metrics",
		Long: `Serve the counters of every testbed that is up (or of one, with -t) on
http://LISTEN/metrics in Prometheus text format: per node frames and bytes,
drops by reason, per-socket datagrams and drops, ARP, fragments, link
impairments (kernel and link layer), template (spoofing) drops, restarts,
every TCP counter of the user-level stacks (netstation_tcp_*), and every
number disk stats and display stats show (netstation_disk_*: requests by op,
capability refusals by reason as netstation_disk_refused_total{reason}, bytes,
transfers, ...; netstation_display_*: frames, tiles, tiles lost, drops by
reason, ...). Counters end in _total; levels (sessions, fps, resolution)
do not. Each scrape asks the supervisors afresh. Runs until Ctrl-C.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			reg := prometheus.NewRegistry()
			reg.MustRegister(&testbedCollector{testbed: name})
			mux := http.NewServeMux()
			mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError}))
			ln, err := net.Listen("tcp", listen)
			if err != nil {
				return err
			}
			srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
			fmt.Fprintf(os.Stderr, "serving metrics on http://%s/metrics\n", ln.Addr())
			go func() {
				<-cmd.Context().Done()
				sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				defer cancel()
				_ = srv.Shutdown(sctx)
			}()
			if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		},
	}
	c.Flags().StringVarP(&name, "testbed", "t", "", "testbed name (default: every testbed)")
	c.Flags().StringVar(&listen, "listen", "127.0.0.1:9100", "address to serve on")
	return c
}

// Metric descriptions. Every series carries testbed and node labels.
var (
	nodeLabels  = []string{"testbed", "node"}
	withLabels  = func(l ...string) []string { return append(append([]string{}, nodeLabels...), l...) }
	descUp      = prometheus.NewDesc("netstation_node_up", "1 when the peripheral is running and answered.", withLabels("kind"), nil)
	descRestart = prometheus.NewDesc("netstation_node_restarts_total", "Restarts of the peripheral by the supervisor.", nodeLabels, nil)
	descFrames  = prometheus.NewDesc("netstation_node_frames_total", "Frames received (rx) and sent (tx) by the user-level stack.", withLabels("direction"), nil)
	descBytes   = prometheus.NewDesc("netstation_node_bytes_total", "Bytes received (rx) and sent (tx) by the user-level stack.", withLabels("direction"), nil)
	descDrops   = prometheus.NewDesc("netstation_node_drops_total", "Frames the engine dropped, by reason.", withLabels("reason"), nil)
	descKind    = prometheus.NewDesc("netstation_kind_counter_total", "A peripheral kind's own counters (peripherals.Runtime.Counter), by name.", withLabels("counter"), nil)
	descSockDg  = prometheus.NewDesc("netstation_socket_datagrams_total", "UDP datagrams of one socket.", withLabels("local", "remote", "direction"), nil)
	descSockB   = prometheus.NewDesc("netstation_socket_bytes_total", "UDP payload bytes of one socket.", withLabels("local", "remote", "direction"), nil)
	descSockDr  = prometheus.NewDesc("netstation_socket_drops_total", "Datagrams dropped because the socket's receive ring was full.", withLabels("local", "remote"), nil)
	descARP     = prometheus.NewDesc("netstation_arp_total", "ARP events: packets in/out by op, cache learned/misses/retries/failed/queue_dropped.", withLabels("event"), nil)
	descARPEnt  = prometheus.NewDesc("netstation_arp_entries", "ARP cache entries resolved (state=resolved) and being resolved (state=pending).", withLabels("state"), nil)
	descFrag    = prometheus.NewDesc("netstation_fragments_total", "IPv4 fragments received into reassembly (in), datagrams reassembled, fragments sent (out).", withLabels("event"), nil)
	descImpair  = prometheus.NewDesc("netstation_link_impaired_frames_total", "Frames a link impairment acted on, where it acts (kernel, link-layer), by direction and action.", withLabels("where", "direction", "action"), nil)
	descTpl     = prometheus.NewDesc("netstation_template_frames_total", "Frames the kernel transmit template saw on the node's port, by verdict (passed, or a drop reason).", withLabels("verdict"), nil)
	descLink    = prometheus.NewDesc("netstation_link_setting", "Link settings in force: rate_bits, loss_ratio, corrupt_ratio, delay_seconds, down.", withLabels("setting"), nil)
	descTplOn   = prometheus.NewDesc("netstation_templates_enabled", "1 when the kernel transmit templates guard every port.", []string{"testbed"}, nil)
	descScrape  = prometheus.NewDesc("netstation_scrape_error", "1 when a testbed's supervisor did not answer this scrape.", []string{"testbed"}, nil)
)

// testbedCollector asks the supervisors at every scrape.
type testbedCollector struct{ testbed string }

var _ prometheus.Collector = (*testbedCollector)(nil)

// Describe sends nothing: the collector is unchecked, because the kinds'
// stats (disk, display) and the TCP counters are exported field by field
// and their set grows with the code (kindmetrics.go).
func (c *testbedCollector) Describe(chan<- *prometheus.Desc) {}

func (c *testbedCollector) Collect(ch chan<- prometheus.Metric) {
	names := []string{c.testbed}
	if c.testbed == "" {
		names, _ = testbed.List()
	}
	for _, tb := range names {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		m, err := testbed.GetMetrics(ctx, tb)
		cancel()
		if err != nil {
			ch <- prometheus.MustNewConstMetric(descScrape, prometheus.GaugeValue, 1, tb)
			continue
		}
		ch <- prometheus.MustNewConstMetric(descScrape, prometheus.GaugeValue, 0, tb)
		collectTestbed(ch, m)
	}
}

func collectTestbed(ch chan<- prometheus.Metric, m *testbed.Metrics) {
	tplOn := 0.0
	if m.Templates == testbed.TemplatesOn {
		tplOn = 1
	}
	ch <- prometheus.MustNewConstMetric(descTplOn, prometheus.GaugeValue, tplOn, m.Testbed)
	for _, n := range m.Nodes {
		counter := func(d *prometheus.Desc, v uint64, l ...string) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), append([]string{m.Testbed, n.Name}, l...)...)
		}
		gauge := func(d *prometheus.Desc, v float64, l ...string) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, append([]string{m.Testbed, n.Name}, l...)...)
		}
		up := 0.0
		if n.Peripheral != nil && n.State == testbed.StateRunning {
			up = 1
		}
		gauge(descUp, up, n.Kind)
		counter(descRestart, uint64(n.Restarts))

		l := n.Link
		gauge(descLink, float64(l.Params.RateBits), "rate_bits")
		gauge(descLink, float64(l.Params.LossPPM)/1e6, "loss_ratio")
		gauge(descLink, float64(l.Params.CorruptPPM)/1e6, "corrupt_ratio")
		gauge(descLink, l.Params.Delay.Seconds(), "delay_seconds")
		down := 0.0
		if l.Params.Down {
			down = 1
		}
		gauge(descLink, down, "down")
		if t := l.TemplateCounters; t != nil {
			for _, v := range []struct {
				verdict string
				n       uint64
			}{{"passed", t.Passed}, {"bad_mac", t.BadMAC}, {"bad_ip", t.BadIP}, {"bad_arp", t.BadARP}, {"bad_type", t.BadType}, {"runt", t.Runt}} {
				counter(descTpl, v.n, v.verdict)
			}
		}
		if k := l.Kernel; k != nil {
			for _, d := range []struct {
				dir string
				c   tcbpf.DirCounters
			}{{"from_node", k.Ingress}, {"to_node", k.Egress}} {
				counter(descImpair, d.c.Passed, "kernel", d.dir, "passed")
				counter(descImpair, d.c.Dropped, "kernel", d.dir, "dropped")
				counter(descImpair, d.c.Corrupted, "kernel", d.dir, "corrupted")
				counter(descImpair, d.c.Blocked, "kernel", d.dir, "blocked")
			}
		}
		if ll := l.LinkLayer; ll != nil {
			counter(descImpair, ll.RxDropped, "link-layer", "to_node", "dropped")
			counter(descImpair, ll.TxDropped, "link-layer", "from_node", "dropped")
			counter(descImpair, ll.Corrupted, "link-layer", "both", "corrupted")
			counter(descImpair, ll.Delayed, "link-layer", "from_node", "delayed")
			counter(descImpair, ll.DelayOverflow, "link-layer", "from_node", "delay_overflow")
		}

		switch n.Kind {
		case "disk":
			diskStatsMetrics.collect(ch, n.Stats, []string{m.Testbed, n.Name})
		case "display":
			displayStatsMetrics.collect(ch, n.Stats, []string{m.Testbed, n.Name})
		}
		p := n.Peripheral
		if p == nil {
			continue
		}
		s := p.Stack
		collectTCP(ch, s.TCP, []string{m.Testbed, n.Name})
		counter(descFrames, s.RxFrames, "rx")
		counter(descFrames, s.TxFrames, "tx")
		counter(descBytes, s.RxBytes, "rx")
		counter(descBytes, s.TxBytes, "tx")
		reasons := make([]string, 0, len(p.DropReasons))
		for r := range p.DropReasons {
			reasons = append(reasons, r)
		}
		sort.Strings(reasons)
		for _, r := range reasons {
			counter(descDrops, p.DropReasons[r], r)
		}
		names := make([]string, 0, len(p.Counters))
		for c := range p.Counters {
			names = append(names, c)
		}
		sort.Strings(names)
		for _, c := range names {
			counter(descKind, p.Counters[c], c)
		}
		seen := map[[2]string]bool{}
		for _, u := range s.UDP {
			local, remote := u.Local.String(), "*"
			if u.Remote.IsValid() {
				remote = u.Remote.String()
			}
			if seen[[2]string{local, remote}] {
				continue // two sockets cannot share both ends; be safe against duplicates
			}
			seen[[2]string{local, remote}] = true
			counter(descSockDg, u.RxDatagrams, local, remote, "rx")
			counter(descSockDg, u.TxDatagrams, local, remote, "tx")
			counter(descSockB, u.RxBytes, local, remote, "rx")
			counter(descSockB, u.TxBytes, local, remote, "tx")
			counter(descSockDr, u.RxDrops, local, remote)
		}
		for _, e := range []struct {
			event string
			n     uint64
		}{
			{"requests_in", s.ARPRequestsIn}, {"replies_in", s.ARPRepliesIn},
			{"requests_out", s.ARPRequestsOut}, {"replies_out", s.ARPRepliesOut},
			{"learned", s.ARP.Learned}, {"misses", s.ARP.Misses}, {"retries", s.ARP.Retries},
			{"failed", s.ARP.Failed}, {"queue_dropped", s.ARP.QueueDropped},
		} {
			counter(descARP, e.n, e.event)
		}
		gauge(descARPEnt, float64(s.ARP.Entries), "resolved")
		gauge(descARPEnt, float64(s.ARP.Pending), "pending")
		counter(descFrag, s.Reassembly.Fragments, "in")
		counter(descFrag, s.Reassembly.Reassembled, "reassembled")
		counter(descFrag, s.FragmentsOut, "out")
	}
}
