package testbed

import (
	"context"
	"sort"
	"time"

	"github.com/netstation/netstation/fabric/tcbpf"
	"github.com/prometheus/client_golang/prometheus"
)

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

// NewCollector returns the Prometheus collector of the testbed called
// name, or of every testbed up when name is "": at every scrape it asks
// the supervisors afresh (GetMetrics) and exports per node frames and
// bytes, drops by reason, the kinds' own counters and stats, TCP
// counters, per-socket datagrams and drops, ARP, fragments, link settings
// and impairments (kernel and link layer), template (spoofing) verdicts
// and restarts. A supervisor that does not answer sets
// netstation_scrape_error for its testbed.
func NewCollector(name string) prometheus.Collector { return &collector{testbed: name} }

// collector asks the supervisors at every scrape.
type collector struct{ testbed string }

var _ prometheus.Collector = (*collector)(nil)

// Describe sends nothing: the collector is unchecked, because the kinds'
// stats (disk, display) and the TCP counters are exported field by field
// and their set grows with the code (kindmetrics.go).
func (c *collector) Describe(chan<- *prometheus.Desc) {}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	names := []string{c.testbed}
	if c.testbed == "" {
		names, _ = List()
	}
	for _, tb := range names {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		m, err := GetMetrics(ctx, tb)
		cancel()
		if err != nil {
			ch <- prometheus.MustNewConstMetric(descScrape, prometheus.GaugeValue, 1, tb)
			continue
		}
		ch <- prometheus.MustNewConstMetric(descScrape, prometheus.GaugeValue, 0, tb)
		collectMetrics(ch, m)
	}
}

func collectMetrics(ch chan<- prometheus.Metric, m *Metrics) {
	tplOn := 0.0
	if m.Templates == TemplatesOn {
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
		if n.Peripheral != nil && n.State == StateRunning {
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
			DiskStatsMetrics.collect(ch, n.Stats, []string{m.Testbed, n.Name})
		case "display":
			DisplayStatsMetrics.collect(ch, n.Stats, []string{m.Testbed, n.Name})
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
