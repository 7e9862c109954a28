package ipv4

import (
	"github.com/netstation/netstation/stack/header"
)

// FragmentPayloadSize returns the payload bytes each fragment but the last
// carries for a link MTU: what fits after a 20-byte header, rounded down to
// a multiple of 8.
func FragmentPayloadSize(mtu int) int {
	return (mtu - header.IPv4MinimumSize) &^ 7
}

// FragmentCount returns how many fragments a datagram with payloadLen
// bytes after the IP header needs.
func FragmentCount(payloadLen, mtu int) int {
	if payloadLen+header.IPv4MinimumSize <= mtu {
		return 1
	}
	fs := FragmentPayloadSize(mtu)
	return (payloadLen + fs - 1) / fs
}

// WriteFragment writes into ip the fragment of payload (the whole
// datagram's bytes after the IP header) that starts at off: a 20-byte
// header from f with the offset and more-fragments flag set, followed by at
// most FragmentPayloadSize(mtu) bytes. ip must hold at least mtu bytes. It
// returns the length of the IP packet written and the offset of the next
// fragment (len(payload) after the last).
func WriteFragment(ip []byte, f *header.IPv4Fields, payload []byte, off, mtu int) (n, next int) {
	fs := FragmentPayloadSize(mtu)
	end := off + fs
	flags := f.Flags &^ header.IPv4FlagMoreFragments
	if end < len(payload) {
		flags |= header.IPv4FlagMoreFragments
	} else {
		end = len(payload)
	}
	h := *f
	h.Flags = flags
	h.FragmentOffset = uint16(off)
	h.TotalLength = uint16(header.IPv4MinimumSize + end - off)
	header.IPv4(ip).Encode(&h)
	copy(ip[header.IPv4MinimumSize:], payload[off:end])
	return header.IPv4MinimumSize + end - off, end
}
