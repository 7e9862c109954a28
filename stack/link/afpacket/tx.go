package afpacket

import (
	"fmt"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/netstation/netstation/stack/link"
)

// Transmit-ring layout: TPACKET_V3 transmit rings are frame based; a frame's
// data starts right after the 48-byte tpacket3_hdr (tp_hdrlen minus
// sizeof(struct sockaddr_ll)).
const (
	txFrameSize      = 2048
	txBlockSize      = 64 << 10
	txFramesPerBlock = txBlockSize / txFrameSize
	txDataOff        = phSize
	txMaxData        = txFrameSize - txDataOff // virtio-net header + frame

	tpStatusAvailable   = 0
	tpStatusSendRequest = 1
	tpStatusSending     = 2
)

// txState is the transmit side's scratch space, guarded by Link.txMu.
type txState struct {
	msgs []unix.Mmsghdr
	iovs []unix.Iovec
	hdrs []byte

	ring       []byte
	ringFrames int
	head       int

	// WriteGather's message: the virtio-net header, then the pieces.
	gmsg  [1]unix.Mmsghdr
	ghdr  [link.VNetHdrLen]byte
	giovs []unix.Iovec
}

func (t *txState) init(batch int) {
	t.msgs = make([]unix.Mmsghdr, batch)
	t.iovs = make([]unix.Iovec, 2*batch)
	t.hdrs = make([]byte, link.VNetHdrLen*batch)
	for i := range t.msgs {
		t.iovs[2*i].Base = &t.hdrs[link.VNetHdrLen*i]
		t.iovs[2*i].SetLen(link.VNetHdrLen)
		t.msgs[i].Hdr.Iov = &t.iovs[2*i]
		t.msgs[i].Hdr.SetIovlen(2)
	}
}

// WriteBatch transmits frames in order and returns how many the kernel
// accepted. It validates every frame first: a frame shorter than 14 bytes,
// longer than MaxFrame, or longer than MTU+14 without a GSO type stops the
// batch before that frame. It is safe for concurrent use.
func (l *Link) WriteBatch(frames []link.Frame) (int, error) {
	valid, verr := link.CheckFrames(frames, l.mtu, maxFrameGSO, l.Caps())
	l.txMu.Lock()
	defer l.txMu.Unlock()
	if l.closed.Load() {
		return 0, link.ErrClosed
	}
	var n int
	var err error
	if l.opts.Tx == TxRing {
		n, err = l.writeRing(frames[:valid])
	} else {
		n, err = l.writeMmsg(frames[:valid])
	}
	if err == nil {
		err = verr
	}
	return n, err
}

var _ link.GatherWriter = (*Link)(nil)

// WriteGather sends one frame given as pieces with one sendmsg: the
// kernel's copy into its buffer gathers them, so a GSO super-frame is
// never assembled in user memory. It always takes the ring-less socket
// (the transmit ring's slots are too small for super-frames anyway).
func (l *Link) WriteGather(v link.VNetHdr, pieces [][]byte) error {
	total := 0
	for _, p := range pieces {
		total += len(p)
	}
	switch {
	case len(pieces) == 0 || len(pieces[0]) < 14:
		return fmt.Errorf("afpacket: gathered frame: %w", ErrFrameTooShort)
	case total > maxFrameGSO:
		return fmt.Errorf("afpacket: gathered frame (%d bytes): %w", total, ErrFrameTooLong)
	case total > l.mtu+14 && v.GSOType&^link.GSOECN == link.GSONone:
		return fmt.Errorf("afpacket: gathered frame (%d bytes, MTU %d): %w", total, l.mtu, ErrNotGSO)
	}
	l.txMu.Lock()
	defer l.txMu.Unlock()
	if l.closed.Load() {
		return link.ErrClosed
	}
	t := &l.tx
	if cap(t.giovs) < len(pieces)+1 {
		t.giovs = make([]unix.Iovec, len(pieces)+1)
	}
	iovs := t.giovs[:len(pieces)+1]
	v.Encode(t.ghdr[:])
	iovs[0].Base = &t.ghdr[0]
	iovs[0].SetLen(link.VNetHdrLen)
	for i, p := range pieces {
		iov := &iovs[i+1]
		iov.Base = nil
		if len(p) > 0 {
			iov.Base = &p[0]
		}
		iov.SetLen(len(p))
	}
	t.gmsg[0].Hdr.Iov = &iovs[0]
	t.gmsg[0].Hdr.SetIovlen(len(iovs))
	sent, err := l.sendmmsg(t.gmsg[:])
	for i := range iovs {
		iovs[i].Base = nil // do not keep the caller's buffers alive
	}
	if sent == 1 {
		l.txFrames.Add(1)
		l.txBytes.Add(uint64(total))
	}
	return err
}

// backoff returns the pacing of one transmit operation's retries.
func (l *Link) backoff() link.TxBackoff {
	return link.NewTxBackoff(l.opts.TxRetryBudget, &l.txRetry)
}

func (l *Link) writeMmsg(frames []link.Frame) (int, error) {
	t := &l.tx
	done := 0
	for done < len(frames) {
		k := min(len(frames)-done, len(t.msgs))
		var bytes uint64
		for i := 0; i < k; i++ {
			f := &frames[done+i]
			f.VNet.Encode(t.hdrs[link.VNetHdrLen*i:])
			iov := &t.iovs[2*i+1]
			iov.Base = &f.Buf[0]
			iov.SetLen(len(f.Buf))
			bytes += uint64(len(f.Buf))
		}
		sent, err := l.sendmmsg(t.msgs[:k])
		for i := 0; i < k; i++ {
			t.iovs[2*i+1].Base = nil // do not keep the caller's buffers alive
		}
		if sent < k {
			bytes = 0
			for i := 0; i < sent; i++ {
				bytes += uint64(len(frames[done+i].Buf))
			}
		}
		l.txFrames.Add(uint64(sent))
		l.txBytes.Add(bytes)
		done += sent
		if err != nil {
			return done, err
		}
	}
	return done, nil
}

// sendmmsg sends msgs, retrying refused messages with back-off.
func (l *Link) sendmmsg(msgs []unix.Mmsghdr) (int, error) {
	sent := 0
	b := l.backoff()
	for sent < len(msgs) {
		r, _, e := unix.RawSyscall6(unix.SYS_SENDMMSG, uintptr(l.sendFd), uintptr(unsafe.Pointer(&msgs[sent])), uintptr(len(msgs)-sent), unix.MSG_DONTWAIT, 0, 0)
		switch e {
		case 0:
			sent += int(r)
			b.Reset()
			l.noteTx()
		case unix.EINTR:
		case unix.ENOBUFS, unix.EAGAIN:
			if err := b.Wait(); err != nil {
				return sent, err
			}
		default:
			return sent, fmt.Errorf("afpacket: sendmmsg: %w", e)
		}
	}
	return sent, nil
}

func (t *txState) slot(i int) int {
	return (i/txFramesPerBlock)*txBlockSize + (i%txFramesPerBlock)*txFrameSize
}

func (t *txState) status(off int) *uint32 {
	return (*uint32)(unsafe.Pointer(&t.ring[off+phStatus]))
}

func (l *Link) writeRing(frames []link.Frame) (int, error) {
	t := &l.tx
	queued, done := 0, 0
	var bytes uint64
	flush := func() error {
		if queued == 0 {
			return nil
		}
		if err := l.flushRing(); err != nil {
			return err
		}
		done += queued
		l.txFrames.Add(uint64(queued))
		l.txBytes.Add(bytes)
		queued, bytes = 0, 0
		return nil
	}
	for i := range frames {
		f := &frames[i]
		if link.VNetHdrLen+len(f.Buf) > txMaxData {
			// A GSO super-frame: does not fit a slot.
			if err := flush(); err != nil {
				return done, err
			}
			f.VNet.Encode(t.hdrs)
			t.iovs[1].Base = &f.Buf[0]
			t.iovs[1].SetLen(len(f.Buf))
			sent, err := l.sendmmsg(t.msgs[:1])
			t.iovs[1].Base = nil
			if sent == 1 {
				done++
				l.txFrames.Add(1)
				l.txBytes.Add(uint64(len(f.Buf)))
			}
			if err != nil {
				return done, err
			}
			continue
		}
		off := t.slot(t.head)
		if st := atomic.LoadUint32(t.status(off)); st != tpStatusAvailable {
			if st&(tpStatusSendRequest|tpStatusSending) != 0 {
				if err := flush(); err != nil {
					return done, err
				}
				if err := l.waitSlot(off); err != nil {
					return done, err
				}
			}
			// TP_STATUS_WRONG_FORMAT is left only by frames we validated;
			// reuse the slot.
		}
		*(*uint32)(unsafe.Pointer(&t.ring[off+phNextOffset])) = 0
		*(*uint32)(unsafe.Pointer(&t.ring[off+phLen])) = uint32(link.VNetHdrLen + len(f.Buf))
		f.VNet.Encode(t.ring[off+txDataOff:])
		copy(t.ring[off+txDataOff+link.VNetHdrLen:], f.Buf)
		atomic.StoreUint32(t.status(off), tpStatusSendRequest)
		t.head++
		if t.head == t.ringFrames {
			t.head = 0
		}
		queued++
		bytes += uint64(len(f.Buf))
	}
	if err := flush(); err != nil {
		return done, err
	}
	return done, nil
}

// flushRing asks the kernel to send every frame marked SEND_REQUEST and
// waits until it did, retrying with back-off while it refuses.
func (l *Link) flushRing() error {
	b := l.backoff()
	for {
		_, _, e := unix.RawSyscall6(unix.SYS_SENDTO, uintptr(l.fd), 0, 0, unix.MSG_DONTWAIT, 0, 0)
		switch e {
		case 0:
			l.noteTx()
			return nil
		case unix.EINTR:
		case unix.ENOBUFS, unix.EAGAIN:
			if err := b.Wait(); err != nil {
				return err
			}
		default:
			return fmt.Errorf("afpacket: send (tx ring): %w", e)
		}
	}
}

// waitSlot waits until the kernel has finished with the slot at off.
func (l *Link) waitSlot(off int) error {
	b := l.backoff()
	for {
		st := atomic.LoadUint32(l.tx.status(off))
		if st&(tpStatusSendRequest|tpStatusSending) == 0 {
			return nil
		}
		if err := l.flushRing(); err != nil {
			return err
		}
		if st = atomic.LoadUint32(l.tx.status(off)); st&(tpStatusSendRequest|tpStatusSending) == 0 {
			return nil
		}
		if err := b.Wait(); err != nil {
			return err
		}
	}
}
