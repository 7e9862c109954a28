package capture

import (
	"encoding/binary"
	"fmt"
	"io"
	"time"
)

// pcapWriter writes the classic pcap file format with nanosecond
// timestamps (magic a1b23c4d, version 2.4, little-endian), Ethernet link
// type: all a capture needs, in 40 lines. It replaced gopacket's pcapgo,
// which imports gopacket/layers, whose init fills 5 MiB of pointer tables
// in every process of the binary: every peripheral paid for them in
// memory (private dirty pages) and in each garbage collection (the
// tables are roots), though only `capture` writes pcap (issue 16).
// Tests still read what it writes with gopacket, an independent decoder.
type pcapWriter struct {
	w   io.Writer
	hdr [16]byte
}

const (
	pcapMagicNanos   = 0xa1b23c4d
	linkTypeEthernet = 1
)

// writeFileHeader writes the file header: snaplen is the longest capture
// length of any record.
func (p *pcapWriter) writeFileHeader(snaplen uint32) error {
	var h [24]byte
	binary.LittleEndian.PutUint32(h[0:], pcapMagicNanos)
	binary.LittleEndian.PutUint16(h[4:], 2) // version 2.4
	binary.LittleEndian.PutUint16(h[6:], 4)
	// thiszone and sigfigs stay zero
	binary.LittleEndian.PutUint32(h[16:], snaplen)
	binary.LittleEndian.PutUint32(h[20:], linkTypeEthernet)
	_, err := p.w.Write(h[:])
	return err
}

// writePacket writes one record: data is what was kept of a frame of
// length frameLen, captured at at.
func (p *pcapWriter) writePacket(at time.Time, data []byte, frameLen int) error {
	if frameLen < len(data) {
		return fmt.Errorf("pcap: %d bytes kept of a %d-byte frame", len(data), frameLen)
	}
	ns := at.UnixNano()
	binary.LittleEndian.PutUint32(p.hdr[0:], uint32(ns/1e9))
	binary.LittleEndian.PutUint32(p.hdr[4:], uint32(ns%1e9))
	binary.LittleEndian.PutUint32(p.hdr[8:], uint32(len(data)))
	binary.LittleEndian.PutUint32(p.hdr[12:], uint32(frameLen))
	if _, err := p.w.Write(p.hdr[:]); err != nil {
		return err
	}
	_, err := p.w.Write(data)
	return err
}
