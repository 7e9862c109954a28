package tcp_test

import (
	"encoding/binary"
	"sync"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/netstation/netstation/stack/engine"
	"github.com/netstation/netstation/stack/link"
	"github.com/netstation/netstation/stack/link/mem"
)

// TestGopacketDecodesEverything records every frame two stacks exchange
// over a connection's whole life (handshake, bulk both ways, close), with
// and without offloads, and has gopacket decode each one: checksums
// complete (offloaded ones after finishing them as the kernel would), GSO
// super-frames well described by their virtio-net header.
func TestGopacketDecodesEverything(t *testing.T) {
	for _, caps := range []link.Caps{0, link.CapVNetHdr, link.CapVNetHdr | link.CapGSO} {
		var mu sync.Mutex
		var frames []link.Frame
		hook := func(f *link.Frame) bool {
			mu.Lock()
			frames = append(frames, link.Frame{Buf: append([]byte(nil), f.Buf...), VNet: f.VNet})
			mu.Unlock()
			return false
		}
		w := newWorld(t, worldOpts{mem: mem.Options{Caps: caps, Drop: hook}})
		c, s := w.connect(t, 80)
		transfer(t, c, s, pattern(1<<20, 1), false)
		transfer(t, s, c, pattern(1<<20, 2), true)
		transfer(t, c, s, pattern(10, 3), true)
		waitState(t, s, "CLOSED")
		mu.Lock()
		got := frames
		frames = nil
		mu.Unlock()
		var nTCP, nGSO int
		for i, f := range got {
			b := f.Buf
			if f.VNet.Flags&link.VNetNeedsCsum != 0 {
				if f.VNet.CsumStart != 34 || (f.VNet.CsumOffset != 16 && f.VNet.CsumOffset != 6) {
					t.Fatalf("caps %v frame %d: csum start %d offset %d", caps, i, f.VNet.CsumStart, f.VNet.CsumOffset)
				}
				v := f.VNet
				if err := engine.FinishChecksum(b, &v); err != nil {
					t.Fatal(err)
				}
			}
			pkt := gopacket.NewPacket(b, layers.LayerTypeEthernet, gopacket.Default)
			if pkt.ErrorLayer() != nil {
				t.Fatalf("caps %v frame %d: %v", caps, i, pkt.ErrorLayer().Error())
			}
			tl, ok := pkt.Layer(layers.LayerTypeTCP).(*layers.TCP)
			if !ok {
				continue // ARP, ICMP
			}
			nTCP++
			ip := pkt.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
			if int(ip.Length) != len(b)-14 {
				t.Fatalf("caps %v frame %d: IP length %d in a %d-byte frame", caps, i, ip.Length, len(b))
			}
			tl.SetNetworkLayerForChecksum(ip)
			if sum, err := tl.ComputeChecksum(); err != nil || sum != 0 {
				t.Fatalf("caps %v frame %d: TCP checksum residue %#x", caps, i, sum)
			}
			if f.VNet.GSOType == link.GSOTCPv4 {
				nGSO++
				hl := int(tl.DataOffset) * 4
				// hdr_len is the whole frame, up to the stack's
				// gsoLinearMax (65,024 B): one linear skb head.
				if int(f.VNet.HdrLen) != min(len(b), 65024) || f.VNet.GSOSize == 0 || int(f.VNet.GSOSize)+hl > 1480 ||
					len(tl.Payload) <= int(f.VNet.GSOSize) || len(b) > 65535+14 {
					t.Fatalf("caps %v frame %d: GSO header %+v for %d payload bytes, TCP header %d", caps, i, f.VNet, len(tl.Payload), hl)
				}
			} else if f.VNet.GSOType != link.GSONone {
				t.Fatalf("caps %v frame %d: GSO type %d", caps, i, f.VNet.GSOType)
			} else if len(b) > 1514 {
				t.Fatalf("caps %v frame %d: %d bytes without GSO", caps, i, len(b))
			}
			if binary.BigEndian.Uint16(b[20:])&0x4000 == 0 {
				t.Fatalf("caps %v frame %d: no DF", caps, i)
			}
		}
		if nTCP < 20 || (caps&link.CapGSO != 0) != (nGSO > 0) {
			t.Fatalf("caps %v: %d TCP frames, %d super-frames", caps, nTCP, nGSO)
		}
		t.Logf("caps %v: %d frames decoded, %d TCP, %d GSO super-frames", caps, len(got), nTCP, nGSO)
	}
}
