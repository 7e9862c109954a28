package cpu

import (
	"fmt"
	"net/netip"

	"github.com/netstation/netstation/cpu/iperf3"
	"github.com/netstation/netstation/peripherals"
)

// StartIperf3 serves iperf3's protocol on TCP port iperf3.Port of p's own
// stack (stack/tcp), with UDP tests on the same port of its UDP: a stock
// `iperf3 -c` (through host access, or from any kernel namespace on the
// fabric) measures the user-level stack directly. It lives with the cpu
// kind, which alone serves it: the peripherals runtime imports no cpu code.
func StartIperf3(p *peripherals.Runtime) (*iperf3.Server, error) {
	addr := p.Config().Addr.Addr()
	ln, err := p.Stack().ListenTCP(netip.AddrPortFrom(addr, iperf3.Port))
	if err != nil {
		return nil, fmt.Errorf("iperf3: listen: %w", err)
	}
	s := &iperf3.Server{
		ListenUDP: func(port int) (iperf3.DatagramConn, error) {
			return p.Stack().ListenUDP(netip.AddrPortFrom(addr, uint16(port)))
		},
		Logger: p.Config().Logger,
	}
	go s.Serve(ln)
	go func() {
		<-p.Done()
		s.Close()
	}()
	p.AddService(fmt.Sprintf("iperf3/tcp:%d", iperf3.Port))
	return s, nil
}
