package afxdp_test

import (
	"log"

	"github.com/netstation/netstation/stack/link"
	"github.com/netstation/netstation/stack/link/afxdp"
)

// Open the mixed link (XSK transmit, AF_PACKET receive) on veth0 and send
// one broadcast frame. (Needs root, so it is compiled but not run.)
func Example() {
	l, err := afxdp.Open("veth0", afxdp.Options{Rx: afxdp.RxAFPacket})
	if err != nil {
		log.Fatal(err)
	}
	defer l.Close()
	f := make([]byte, 60)
	copy(f, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	copy(f[6:], l.HardwareAddr())
	f[12], f[13] = 0x88, 0xb5 // local experimental EtherType
	if _, err := l.WriteBatch([]link.Frame{{Buf: f}}); err != nil {
		log.Fatal(err)
	}
}
