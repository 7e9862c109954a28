package capture

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Limits that keep a filter's program small enough for classic BPF's
// 8-bit forward jumps.
const (
	maxTokens = 64
	maxDepth  = 16
	maxInsns  = 250
)

// A Filter is a parsed capture filter: a small subset of tcpdump's
// language, enough to pick a protocol, a host or a port out of a testbed's
// traffic:
//
//	ip | arp | udp | tcp | icmp
//	[src|dst] host A.B.C.D   (IPv4 source/destination, or ARP sender/target)
//	[src|dst] port N         (UDP or TCP, first fragments only)
//	not X | X and Y | X or Y | ( X )
//
// "and" binds tighter than "or"; "&&", "||" and "!" are accepted too.
// Frames are assumed untagged Ethernet. A filter compiles to classic BPF
// for the capture socket ([Filter.Program]) and also evaluates in Go
// ([Filter.Match]) with the same result for every frame, including
// frames too short for a field: like the kernel, Match rejects the frame
// outright when evaluation reaches a field past its end.
type Filter struct {
	root node
	text string
}

type nodeKind int

const (
	kAnd nodeKind = iota
	kOr
	kNot
	kEther // ethertype == val
	kProto // ip and protocol == val
	kHost  // dir: 0 either, 1 src, 2 dst
	kPort
)

type node struct {
	kind nodeKind
	l, r *node
	val  uint32
	dir  int
}

// ParseFilter parses expr. The empty string (or only spaces) matches every
// frame and yields a nil *Filter.
func ParseFilter(expr string) (*Filter, error) {
	toks := tokenize(expr)
	if len(toks) == 0 {
		return nil, nil
	}
	if len(toks) > maxTokens {
		return nil, fmt.Errorf("capture: filter %q: more than %d words: %w", expr, maxTokens, ErrFilter)
	}
	p := &parser{toks: toks}
	n, err := p.or(0)
	if err == nil && p.pos < len(p.toks) {
		err = fmt.Errorf("unexpected %q", p.toks[p.pos])
	}
	if err != nil {
		return nil, fmt.Errorf("capture: filter %q: %v: %w", expr, err, ErrFilter)
	}
	f := &Filter{root: *n, text: strings.Join(toks, " ")}
	if _, err := f.Program(65535); err != nil {
		return nil, err
	}
	return f, nil
}

var _ fmt.Stringer = (*Filter)(nil)

// String returns the filter in normalised form.
func (f *Filter) String() string {
	if f == nil {
		return ""
	}
	return f.text
}

func tokenize(s string) []string {
	var toks []string
	cur := strings.Builder{}
	flush := func() {
		if cur.Len() > 0 {
			toks = append(toks, cur.String())
			cur.Reset()
		}
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			flush()
		case c == '(' || c == ')' || c == '!':
			flush()
			toks = append(toks, string(c))
		case (c == '&' || c == '|') && i+1 < len(s) && s[i+1] == c:
			flush()
			toks = append(toks, s[i:i+2])
			i++
		default:
			cur.WriteByte(c)
		}
	}
	flush()
	return toks
}

type parser struct {
	toks []string
	pos  int
}

func (p *parser) peek() string {
	if p.pos < len(p.toks) {
		return p.toks[p.pos]
	}
	return ""
}

func (p *parser) next() string {
	t := p.peek()
	if p.pos < len(p.toks) {
		p.pos++
	}
	return t
}

func (p *parser) or(depth int) (*node, error) {
	if depth > maxDepth {
		return nil, fmt.Errorf("nested deeper than %d", maxDepth)
	}
	l, err := p.and(depth)
	if err != nil {
		return nil, err
	}
	for t := p.peek(); t == "or" || t == "||"; t = p.peek() {
		p.next()
		r, err := p.and(depth)
		if err != nil {
			return nil, err
		}
		l = &node{kind: kOr, l: l, r: r}
	}
	return l, nil
}

func (p *parser) and(depth int) (*node, error) {
	l, err := p.unary(depth)
	if err != nil {
		return nil, err
	}
	for t := p.peek(); t == "and" || t == "&&"; t = p.peek() {
		p.next()
		r, err := p.unary(depth)
		if err != nil {
			return nil, err
		}
		l = &node{kind: kAnd, l: l, r: r}
	}
	return l, nil
}

func (p *parser) unary(depth int) (*node, error) {
	if depth > maxDepth {
		return nil, fmt.Errorf("nested deeper than %d", maxDepth)
	}
	switch t := p.next(); t {
	case "not", "!":
		x, err := p.unary(depth + 1)
		if err != nil {
			return nil, err
		}
		return &node{kind: kNot, l: x}, nil
	case "(":
		x, err := p.or(depth + 1)
		if err != nil {
			return nil, err
		}
		if p.next() != ")" {
			return nil, fmt.Errorf("missing )")
		}
		return x, nil
	case "ip":
		return &node{kind: kEther, val: unix.ETH_P_IP}, nil
	case "arp":
		return &node{kind: kEther, val: unix.ETH_P_ARP}, nil
	case "udp":
		return &node{kind: kProto, val: unix.IPPROTO_UDP}, nil
	case "tcp":
		return &node{kind: kProto, val: unix.IPPROTO_TCP}, nil
	case "icmp":
		return &node{kind: kProto, val: unix.IPPROTO_ICMP}, nil
	case "src", "dst", "host", "port":
		dir := 0
		if t == "src" || t == "dst" {
			dir = map[string]int{"src": 1, "dst": 2}[t]
			t = p.next()
		}
		arg := p.next()
		switch t {
		case "host":
			a, err := netip.ParseAddr(arg)
			if err != nil || !a.Is4() {
				return nil, fmt.Errorf("host wants an IPv4 address, got %q", arg)
			}
			b := a.As4()
			return &node{kind: kHost, dir: dir, val: binary.BigEndian.Uint32(b[:])}, nil
		case "port":
			n, err := strconv.ParseUint(arg, 10, 16)
			if err != nil {
				return nil, fmt.Errorf("port wants a number 0-65535, got %q", arg)
			}
			return &node{kind: kPort, dir: dir, val: uint32(n)}, nil
		}
		return nil, fmt.Errorf("%q wants host or port after it, got %q", "src/dst", t)
	case "":
		return nil, fmt.Errorf("unexpected end")
	default:
		return nil, fmt.Errorf("unknown word %q", t)
	}
}

// Match reports whether the filter accepts frame (a nil filter accepts
// everything). It gives the kernel program's answer.
func (f *Filter) Match(frame []byte) bool {
	if f == nil {
		return true
	}
	m := matcher{b: frame}
	r := m.eval(&f.root)
	return r && !m.abort
}

// matcher evaluates in the compiled program's order; a load past the end
// sets abort, which rejects the frame as the kernel does.
type matcher struct {
	b     []byte
	abort bool
}

func (m *matcher) u8(off int) uint32 {
	if off < 0 || off+1 > len(m.b) {
		m.abort = true
		return 0
	}
	return uint32(m.b[off])
}

func (m *matcher) u16(off int) uint32 {
	if off < 0 || off+2 > len(m.b) {
		m.abort = true
		return 0
	}
	return uint32(binary.BigEndian.Uint16(m.b[off:]))
}

func (m *matcher) u32(off int) uint32 {
	if off < 0 || off+4 > len(m.b) {
		m.abort = true
		return 0
	}
	return binary.BigEndian.Uint32(m.b[off:])
}

func (m *matcher) eval(n *node) bool {
	if m.abort {
		return false
	}
	switch n.kind {
	case kAnd:
		return m.eval(n.l) && !m.abort && m.eval(n.r)
	case kOr:
		return (m.eval(n.l) || !m.abort && m.eval(n.r)) && !m.abort
	case kNot:
		return !m.eval(n.l) && !m.abort
	case kEther:
		return m.u16(12) == n.val && !m.abort
	case kProto:
		return m.u16(12) == unix.ETH_P_IP && !m.abort && m.u8(23) == n.val && !m.abort
	case kHost:
		switch et := m.u16(12); {
		case m.abort:
			return false
		case et == unix.ETH_P_IP:
			return m.either(n.dir, m.u32, 26, 30, n.val)
		case et == unix.ETH_P_ARP:
			return m.either(n.dir, m.u32, 28, 38, n.val)
		}
		return false
	case kPort:
		if m.u16(12) != unix.ETH_P_IP || m.abort {
			return false
		}
		if p := m.u8(23); m.abort || p != unix.IPPROTO_UDP && p != unix.IPPROTO_TCP {
			return false
		}
		if m.u16(20)&0x1fff != 0 || m.abort {
			return false
		}
		x := int(m.u8(14)&0xf) * 4
		if m.abort {
			return false
		}
		return m.either(n.dir, m.u16, 14+x, 16+x, n.val)
	}
	return false
}

// either compares the field at the source offset, the destination offset,
// or both (dir 0), in that order.
func (m *matcher) either(dir int, load func(int) uint32, srcOff, dstOff int, want uint32) bool {
	if dir != 2 {
		if load(srcOff) == want && !m.abort {
			return true
		}
		if m.abort || dir == 1 {
			return false
		}
	}
	return load(dstOff) == want && !m.abort
}

// Classic BPF opcodes (linux/filter.h).
const (
	bpfLdHAbs  = unix.BPF_LD | unix.BPF_H | unix.BPF_ABS
	bpfLdBAbs  = unix.BPF_LD | unix.BPF_B | unix.BPF_ABS
	bpfLdWAbs  = unix.BPF_LD | unix.BPF_W | unix.BPF_ABS
	bpfLdHInd  = unix.BPF_LD | unix.BPF_H | unix.BPF_IND
	bpfLdxMsh  = unix.BPF_LDX | unix.BPF_B | unix.BPF_MSH
	bpfJeqK    = unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K
	bpfJsetK   = unix.BPF_JMP | unix.BPF_JSET | unix.BPF_K
	bpfJa      = unix.BPF_JMP | unix.BPF_JA
	bpfRetK    = unix.BPF_RET | unix.BPF_K
	labelTrue  = -1
	labelFalse = -2
)

// asm is a tiny classic-BPF assembler with forward labels.
type cbpf struct {
	ins    []unix.SockFilter
	jt, jf []int // label of each instruction's true/false target (-3: none)
	labels map[int]int
	nextL  int
	err    error
}

func (a *cbpf) label() int { a.nextL++; return a.nextL }

func (a *cbpf) place(l int) { a.labels[l] = len(a.ins) }

func (a *cbpf) emit(code uint16, k uint32, jt, jf int) {
	a.ins = append(a.ins, unix.SockFilter{Code: code, K: k})
	a.jt = append(a.jt, jt)
	a.jf = append(a.jf, jf)
}

// jeq: if A == k goto t else goto f (labels; 0 = next instruction).
func (a *cbpf) jeq(k uint32, t, f int) { a.emit(bpfJeqK, k, t, f) }

func (a *cbpf) ld(code uint16, off uint32) { a.emit(code, off, 0, 0) }

// compile emits code that jumps to t when n holds and to f otherwise.
func (a *cbpf) compile(n *node, t, f int) {
	switch n.kind {
	case kAnd:
		mid := a.label()
		a.compile(n.l, mid, f)
		a.place(mid)
		a.compile(n.r, t, f)
	case kOr:
		mid := a.label()
		a.compile(n.l, t, mid)
		a.place(mid)
		a.compile(n.r, t, f)
	case kNot:
		a.compile(n.l, f, t)
	case kEther:
		a.ld(bpfLdHAbs, 12)
		a.jeq(n.val, t, f)
	case kProto:
		a.ld(bpfLdHAbs, 12)
		a.jeq(unix.ETH_P_IP, 0, f)
		a.ld(bpfLdBAbs, 23)
		a.jeq(n.val, t, f)
	case kHost:
		arp := a.label()
		a.ld(bpfLdHAbs, 12)
		a.jeq(unix.ETH_P_IP, 0, arp)
		a.either(n.dir, bpfLdWAbs, 26, 30, n.val, t, f)
		a.place(arp)
		a.jeq(unix.ETH_P_ARP, 0, f)
		a.either(n.dir, bpfLdWAbs, 28, 38, n.val, t, f)
	case kPort:
		tcp := a.label()
		a.ld(bpfLdHAbs, 12)
		a.jeq(unix.ETH_P_IP, 0, f)
		a.ld(bpfLdBAbs, 23)
		a.jeq(unix.IPPROTO_UDP, tcp, 0)
		a.jeq(unix.IPPROTO_TCP, 0, f)
		a.place(tcp)
		a.ld(bpfLdHAbs, 20)
		a.emit(bpfJsetK, 0x1fff, f, 0)
		a.ld(bpfLdxMsh, 14)
		a.either(n.dir, bpfLdHInd, 14, 16, n.val, t, f)
	}
}

func (a *cbpf) either(dir int, code uint16, srcOff, dstOff, want uint32, t, f int) {
	if dir != 2 {
		a.ld(code, srcOff)
		if dir == 1 {
			a.jeq(want, t, f)
			return
		}
		a.jeq(want, t, 0)
	}
	a.ld(code, dstOff)
	a.jeq(want, t, f)
}

// Program compiles the filter to classic BPF returning snaplen for an
// accepted frame and 0 otherwise. A nil filter accepts every frame.
func (f *Filter) Program(snaplen uint32) ([]unix.SockFilter, error) {
	if f == nil {
		return []unix.SockFilter{{Code: bpfRetK, K: snaplen}}, nil
	}
	a := &cbpf{labels: map[int]int{}}
	a.compile(&f.root, labelTrue, labelFalse)
	accept := len(a.ins)
	a.emit(bpfRetK, snaplen, 0, 0)
	reject := len(a.ins)
	a.emit(bpfRetK, 0, 0, 0)
	if len(a.ins) > maxInsns {
		return nil, fmt.Errorf("capture: filter %q: too complex (%d instructions): %w", f.text, len(a.ins), ErrFilter)
	}
	target := func(i, l int) (int, error) {
		var to int
		switch l {
		case 0:
			return 0, nil
		case labelTrue:
			to = accept
		case labelFalse:
			to = reject
		default:
			var ok bool
			if to, ok = a.labels[l]; !ok {
				return 0, fmt.Errorf("unplaced label")
			}
		}
		d := to - i - 1
		if d < 0 || d > 255 {
			return 0, fmt.Errorf("jump of %d", d)
		}
		return d, nil
	}
	for i := range a.ins {
		if a.ins[i].Code&0x07 != unix.BPF_JMP {
			continue
		}
		jt, err := target(i, a.jt[i])
		if err == nil {
			var jf int
			jf, err = target(i, a.jf[i])
			a.ins[i].Jf = uint8(jf)
		}
		if err != nil {
			return nil, fmt.Errorf("capture: filter %q: %v: %w", f.text, err, ErrFilter)
		}
		a.ins[i].Jt = uint8(jt)
	}
	return a.ins, nil
}
