package afpacket_test

import (
	"log"
	"time"

	"github.com/netstation/netstation/stack/link"
	"github.com/netstation/netstation/stack/link/afpacket"
)

// Open a link on a veth inside the current namespace, echo every frame
// back with source and destination swapped. (Needs root and an interface
// named veth0, so it is compiled but not run.)
func Example() {
	l, err := afpacket.Open("veth0", afpacket.Options{BusyPoll: 20 * time.Microsecond})
	if err != nil {
		log.Fatal(err)
	}
	defer l.Close()
	frames := make([]link.Frame, 64)
	for {
		n, err := l.ReadBatch(frames)
		if err != nil {
			return // link.ErrClosed after Close
		}
		for i := range frames[:n] {
			b := frames[i].Buf // valid until the next ReadBatch
			var tmp [6]byte
			copy(tmp[:], b[0:6])
			copy(b[0:6], b[6:12])
			copy(b[6:12], tmp[:])
		}
		if _, err := l.WriteBatch(frames[:n]); err != nil {
			log.Print(err)
		}
	}
}
