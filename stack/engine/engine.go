package engine

import (
	"errors"
	"github.com/netstation/netstation/stack/link"
)

// Engine ties a link to the classifier, the counters and the transmit
// fence. One Engine serves one stack; its methods are safe for concurrent
// use except Classify, which belongs to the single receive loop.
type Engine struct {
	Classifier
	Counters
	Link link.Link
}

// Transmit checks frames against t, drops (and counts) those that do not
// match, and writes the rest to the link in order. It returns how many
// frames reached the link.
func (e *Engine) Transmit(frames []link.Frame, t *Template) (int, error) {
	sent := 0
	start := 0
	for i := range frames {
		if t.Match(frames[i].Buf) {
			continue
		}
		e.Drop(DropTemplateMismatch)
		if i > start {
			n, err := e.write(frames[start:i])
			sent += n
			if err != nil {
				return sent, err
			}
		}
		start = i + 1
	}
	if start < len(frames) {
		n, err := e.write(frames[start:])
		sent += n
		if err != nil {
			return sent, err
		}
	}
	return sent, nil
}

func (e *Engine) write(frames []link.Frame) (int, error) {
	n, err := e.Link.WriteBatch(frames)
	var bytes uint64
	for i := range frames[:n] {
		bytes += uint64(len(frames[i].Buf))
		if frames[i].VNet.Flags&link.VNetNeedsCsum != 0 {
			e.TxOffload.Add(1)
		}
	}
	e.TxFrames.Add(uint64(n))
	e.TxBytes.Add(bytes)
	if err != nil {
		e.Drops[DropLinkError].Add(uint64(len(frames) - n))
	}
	return n, err
}

// WriteChecked writes frames that already passed their template check
// (such as frames that waited for ARP) to the link.
func (e *Engine) WriteChecked(frames []link.Frame) (int, error) {
	return e.write(frames)
}

// TransmitGather sends one frame given as pieces (see link.GatherWriter)
// after checking its headers, all in pieces[0], against t. It reports
// false, with nothing sent, when the link cannot gather: the caller then
// assembles the frame and uses Transmit.
func (e *Engine) TransmitGather(v link.VNetHdr, pieces [][]byte, t *Template) (bool, error) {
	gw, ok := e.Link.(link.GatherWriter)
	if !ok {
		return false, nil
	}
	if !t.Match(pieces[0]) {
		e.Drop(DropTemplateMismatch)
		return true, nil
	}
	var bytes uint64
	for _, p := range pieces {
		bytes += uint64(len(p))
	}
	if err := gw.WriteGather(v, pieces); err != nil {
		if errors.Is(err, link.ErrNoGather) {
			return false, nil
		}
		e.Drops[DropLinkError].Add(1)
		return true, err
	}
	if v.Flags&link.VNetNeedsCsum != 0 {
		e.TxOffload.Add(1)
	}
	e.TxFrames.Add(1)
	e.TxBytes.Add(bytes)
	return true, nil
}
