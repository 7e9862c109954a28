package main

import (
	"bytes"
	byteorder "encoding/binary"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
	"github.com/netstation/netstation/stack/checksum"
	dto "github.com/prometheus/client_model/go"
)

// TestCaptureDecodes captures the whole fabric during a ping and a storage
// exchange, stops the capture with Ctrl-C, and reads the file back with
// gopacket's pcapgo: every frame decodes, every IPv4, ICMP and UDP
// checksum is valid, and the ping and the storage traffic are there.
func TestCaptureDecodes(t *testing.T) {
	b := newBed(t)
	b.must("up", "-f", b.topo(b.name, threeNodes))
	out := filepath.Join(t.TempDir(), "fabric.pcap")
	c := b.cmd("capture", "-t", b.name, "fabric", "-w", out)
	var stderr bytes.Buffer
	c.Stderr = &stderr
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	defer c.Process.Kill()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(stderr.String(), "capturing") {
		if time.Now().After(deadline) {
			t.Fatalf("capture did not start: %s", stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	b.must("ping", "-t", b.name, "-c", "5", "-i", "10ms", "cpu0", "disk0")
	b.must("demo", "storage", "-t", b.name, "--size", "1MiB")
	if err := c.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	if err := c.Wait(); err != nil {
		t.Fatalf("capture after Ctrl-C: %v\n%s", err, stderr.String())
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := pcapgo.NewReader(f)
	if err != nil {
		t.Fatalf("pcapgo: %v", err)
	}
	if r.LinkType() != layers.LinkTypeEthernet {
		t.Errorf("link type %v", r.LinkType())
	}
	var frames, echoReq, echoRep, udp, udpBytes int
	for {
		data, _, err := r.ReadPacketData()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("frame %d: %v", frames, err)
		}
		frames++
		p := gopacket.NewPacket(data, layers.LayerTypeEthernet, gopacket.Default)
		if el := p.ErrorLayer(); el != nil {
			t.Errorf("frame %d does not decode: %v", frames, el.Error())
			continue
		}
		ip4, ok := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
		if !ok {
			continue
		}
		hdr := data[14 : 14+int(ip4.IHL)*4]
		if checksum.Checksum(hdr, 0) != 0 {
			t.Errorf("frame %d: bad IPv4 header checksum", frames)
		}
		l4 := ip4.Payload
		if ip4.Protocol == layers.IPProtocolUDP {
			udpBytes += len(l4) // fragments included: the storage protocol's blocks are larger than a frame
		}
		if ip4.Flags&layers.IPv4MoreFragments != 0 || ip4.FragOffset != 0 {
			continue // L4 checksums cover the reassembled datagram
		}
		switch ip4.Protocol {
		case layers.IPProtocolICMPv4:
			if checksum.Checksum(l4, 0) != 0 {
				t.Errorf("frame %d: bad ICMP checksum", frames)
			}
			switch l4[0] {
			case 8:
				echoReq++
			case 0:
				echoRep++
			}
		case layers.IPProtocolUDP:
			udp++
			if byteorder.BigEndian.Uint16(l4[6:]) == 0 {
				continue // no checksum
			}
			ph := checksum.PseudoHeader([4]byte(ip4.SrcIP.To4()), [4]byte(ip4.DstIP.To4()), 17, uint16(len(l4)))
			if checksum.Checksum(l4, ph) != 0 {
				t.Errorf("frame %d: bad UDP checksum (%v -> %v, %d bytes)", frames, ip4.SrcIP, ip4.DstIP, len(l4))
			}
		}
	}
	t.Logf("%d frames: %d echo requests, %d replies, %d whole UDP datagrams, %d bytes of UDP in IPv4", frames, echoReq, echoRep, udp, udpBytes)
	if echoReq < 5 || echoRep < 5 {
		t.Errorf("the ping is missing: %d requests, %d replies", echoReq, echoRep)
	}
	// The demo writes and reads back 1 MiB.
	if udpBytes < 2<<20 {
		t.Errorf("the storage exchange is missing: %d UDP payload bytes", udpBytes)
	}
	if !strings.Contains(stderr.String(), "frames captured") {
		t.Errorf("capture printed no summary: %s", stderr.String())
	}
}

// TestMetricsAndWatch scrapes `netstation metrics` and parses it as
// Prometheus text; `status -w` redraws with rates.
func TestMetricsAndWatch(t *testing.T) {
	b := newBed(t)
	b.must("up", "-f", b.topo(b.name, twoCPUs))
	b.must("ping", "-t", b.name, "-c", "3", "-i", "10ms", "a", "b")
	b.must("link", "set", "-t", b.name, "a", "--loss", "1%", "--delay", "1ms")

	fams := scrape(t, b) // every testbed up: the labels pick ours
	value := func(name string, labels map[string]string) (float64, bool) {
		f := fams[name]
		if f == nil {
			return 0, false
		}
	next:
		for _, m := range f.Metric {
			have := map[string]string{}
			for _, l := range m.Label {
				have[l.GetName()] = l.GetValue()
			}
			for k, v := range labels {
				if have[k] != v {
					continue next
				}
			}
			return metricValue(m), true
		}
		return 0, false
	}
	a := map[string]string{"testbed": b.name, "node": "a"}
	with := func(k, v string) map[string]string {
		out := map[string]string{k: v}
		for k, v := range a {
			out[k] = v
		}
		return out
	}
	for _, want := range []struct {
		name   string
		labels map[string]string
		min    float64
	}{
		{"netstation_node_up", a, 1},
		{"netstation_node_frames_total", with("direction", "tx"), 3},
		{"netstation_node_frames_total", with("direction", "rx"), 3},
		{"netstation_node_restarts_total", a, 0},
		{"netstation_arp_total", with("event", "learned"), 1},
		{"netstation_template_frames_total", with("verdict", "passed"), 3},
		{"netstation_template_frames_total", with("verdict", "bad_ip"), 0},
		{"netstation_link_setting", with("setting", "loss_ratio"), 0.01},
		{"netstation_link_setting", with("setting", "delay_seconds"), 0.001},
		{"netstation_link_impaired_frames_total", with("where", "kernel"), 0},
		{"netstation_fragments_total", with("event", "out"), 0},
		{"netstation_templates_enabled", map[string]string{"testbed": b.name}, 1},
	} {
		v, ok := value(want.name, want.labels)
		if !ok || v < want.min {
			t.Errorf("%s%v = %v (present %v), want >= %v", want.name, want.labels, v, ok, want.min)
		}
	}

	w := b.cmd("status", "-t", b.name, "-w", "--interval", "200ms")
	// A file, not a buffer: the command writes it itself, and the test
	// reads it meanwhile.
	wpath := filepath.Join(t.TempDir(), "status-w.out")
	wf, err := os.Create(wpath)
	if err != nil {
		t.Fatal(err)
	}
	defer wf.Close()
	w.Stdout = wf
	wout := watchOutput(wpath)
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	// Ctrl-C once it has redrawn (3 tables): after a fixed 1.5 s a
	// status slow to start on a loaded machine had drawn fewer, or had
	// not yet taken over SIGINT.
	for deadline := time.Now().Add(30 * time.Second); strings.Count(wout.String(), "RX PPS") < 3 && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
	}
	w.Process.Signal(os.Interrupt)
	if err := w.Wait(); err != nil {
		t.Errorf("status -w after Ctrl-C: %v", err)
	}
	if n := strings.Count(wout.String(), "RX PPS"); n < 3 {
		t.Errorf("status -w drew %d tables in 30 s at 200ms:\n%s", n, wout.String())
	}
	if !strings.Contains(wout.String(), "loss 1% delay 1ms") {
		t.Errorf("status -w does not show the link:\n%s", wout.String())
	}
}

func metricValue(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Untyped != nil:
		return m.Untyped.GetValue()
	}
	return 0
}

// watchOutput reads what a command has written to the file at path so far.
type watchOutput string

func (p watchOutput) String() string {
	b, _ := os.ReadFile(string(p))
	return string(b)
}
