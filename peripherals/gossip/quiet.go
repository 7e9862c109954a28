package gossip

import (
	"encoding/binary"
	"hash/crc32"

	"github.com/hashicorp/go-msgpack/v2/codec"
)

// memberlist's packet framing (its net.go; stable since protocol version
// 5): a packet is one message, or a compound of several, each starting
// with its type; a CRC header may precede the whole.
const (
	mlAlive    = 4  // aliveMsg
	mlCompound = 7  // compoundMsg: type, count, count x uint16 length, messages
	mlHasCRC   = 12 // hasCrcMsg: type, CRC-32 (IEEE) of the rest, the rest
)

// firstIncarnation is the incarnation of a memberlist node's first alive
// message: a process starts at it and only a refutation (it heard itself
// suspected or declared dead) or a metadata update raises it.
const firstIncarnation = 1

// aliveHeader is what quietPacket reads of an alive message; the codec
// skips the other fields.
type aliveHeader struct {
	Incarnation uint32
	Node        string
}

// quietPacket returns pkt without the alive messages about other members
// at their first incarnation (joins), and how many it took out; nil when
// nothing is left to send. memberlist re-broadcasts every member it learns
// of, however it learned it (a join's push/pull included), to
// RetransmitMult x log10(n) others: at 1,000 members joining, a
// 1,000 x 1,000 x 4 dissemination of messages every receiver decodes, that
// kept 2 cores saturated for minutes (docs/SCALE.md). A testbed's
// supervisor completes every view with full-state exchanges instead
// (Node.Exchange). Refutations (higher incarnations), suspicions, deaths,
// pings and a node's own alive message go out as memberlist made them. A
// packet it cannot parse goes out unchanged.
func quietPacket(pkt []byte, self string) ([]byte, int) {
	crc := len(pkt) >= 5 && pkt[0] == mlHasCRC
	body := pkt
	if crc {
		body = pkt[5:]
	}
	if len(body) == 0 {
		return pkt, 0
	}
	switch body[0] {
	case mlAlive:
		if isJoinMsg(body, self) {
			return nil, 1
		}
		return pkt, 0
	case mlCompound:
	default:
		return pkt, 0
	}
	// Most packets carry no join: look before copying anything.
	var join [256 / 64]uint64 // bit i: message i is a join (at most 255)
	i, joins := 0, 0
	ok := walkCompound(body[1:], func(p []byte) {
		if isJoinMsg(p, self) {
			join[i/64] |= 1 << (i % 64)
			joins++
		}
		i++
	})
	if !ok || joins == 0 {
		return pkt, 0
	}
	parts, _ := splitCompound(body[1:])
	keep := make([][]byte, 0, len(parts)-joins)
	for i, p := range parts {
		if join[i/64]&(1<<(i%64)) == 0 {
			keep = append(keep, p)
		}
	}
	quieted := len(parts) - len(keep)
	if len(keep) == 0 {
		return nil, quieted
	}
	var out []byte
	if crc {
		out = append(out, mlHasCRC, 0, 0, 0, 0)
	}
	if len(keep) == 1 {
		out = append(out, keep[0]...)
	} else {
		out = append(out, mlCompound, byte(len(keep)))
		for _, p := range keep {
			out = binary.BigEndian.AppendUint16(out, uint16(len(p)))
		}
		for _, p := range keep {
			out = append(out, p...)
		}
	}
	if crc {
		binary.BigEndian.PutUint32(out[1:5], crc32.ChecksumIEEE(out[5:]))
	}
	return out, quieted
}

// walkCompound calls f with each message of a compound message's body
// (after its type byte); it reports false, having called f for none,
// unless the body is well formed and whole.
func walkCompound(b []byte, f func(msg []byte)) bool {
	if len(b) < 1 {
		return false
	}
	n := int(b[0])
	b = b[1:]
	if len(b) < 2*n {
		return false
	}
	lens, rest := b[:2*n], b[2*n:]
	total := 0
	for i := range n {
		total += int(binary.BigEndian.Uint16(lens[2*i:]))
	}
	if total != len(rest) {
		return false
	}
	for i := range n {
		l := int(binary.BigEndian.Uint16(lens[2*i:]))
		f(rest[:l])
		rest = rest[l:]
	}
	return true
}

// splitCompound splits a compound message's body (after its type byte);
// ok is false unless it is well formed and whole.
func splitCompound(b []byte) (parts [][]byte, ok bool) {
	ok = walkCompound(b, func(p []byte) { parts = append(parts, p) })
	return parts, ok
}

// isJoinMsg reports whether msg is an alive message that announces another
// member than self at its first incarnation.
func isJoinMsg(msg []byte, self string) bool {
	return len(msg) > 0 && msg[0] == mlAlive && isJoin(msg[1:], self)
}

// isJoin reports whether an alive message's body announces another member
// than self at its first incarnation.
func isJoin(b []byte, self string) bool {
	inc, node, ok := aliveFast(b)
	if !ok {
		var h aliveHeader
		if err := codec.NewDecoderBytes(b, &msgpackHandle).Decode(&h); err != nil {
			return false
		}
		inc, node = h.Incarnation, h.Node
	}
	return inc == firstIncarnation && node != self && node != ""
}

// aliveFast reads the incarnation and node name of an alive message
// without a decoder: each gossip datagram of a large cluster carries
// several, and every one is looked at. It reads a msgpack map whose keys
// are short strings and whose values are unsigned integers, nil, binary
// or strings (what memberlist's codec writes for an alive message); ok is
// false for anything else, and the codec then decides.
func aliveFast(b []byte) (inc uint32, node string, ok bool) {
	if len(b) < 1 || b[0]&0xf0 != 0x80 {
		return 0, "", false
	}
	entries, b := int(b[0]&0x0f), b[1:]
	var haveInc, haveNode bool
	for range entries {
		if len(b) < 1 || b[0]&0xe0 != 0xa0 {
			return 0, "", false
		}
		kl := int(b[0] & 0x1f)
		if len(b) < 1+kl+1 {
			return 0, "", false
		}
		key := string(b[1 : 1+kl])
		b = b[1+kl:]
		var n, head int // value: a number, or head bytes then n bytes
		var num uint64
		switch t := b[0]; {
		case t <= 0x7f:
			num, head = uint64(t), 1
		case t == 0xcc && len(b) >= 2:
			num, head = uint64(b[1]), 2
		case t == 0xcd && len(b) >= 3:
			num, head = uint64(binary.BigEndian.Uint16(b[1:])), 3
		case t == 0xce && len(b) >= 5:
			num, head = uint64(binary.BigEndian.Uint32(b[1:])), 5
		case t == 0xc0:
			head = 1
		case t&0xe0 == 0xa0:
			head, n = 1, int(t&0x1f)
		case (t == 0xc4 || t == 0xd9) && len(b) >= 2:
			head, n = 2, int(b[1])
		case (t == 0xc5 || t == 0xda) && len(b) >= 3:
			head, n = 3, int(binary.BigEndian.Uint16(b[1:]))
		default:
			return 0, "", false
		}
		if len(b) < head+n {
			return 0, "", false
		}
		switch key {
		case "Incarnation":
			if n != 0 || num > 0xffffffff {
				return 0, "", false
			}
			inc, haveInc = uint32(num), true
		case "Node":
			if t := b[0]; t&0xe0 != 0xa0 && t != 0xd9 && t != 0xda {
				return 0, "", false
			}
			node, haveNode = string(b[head:head+n]), true
		}
		b = b[head+n:]
	}
	return inc, node, haveInc && haveNode
}

// msgpackHandle decodes as memberlist encodes (codec.MsgpackHandle's
// defaults).
var msgpackHandle codec.MsgpackHandle
