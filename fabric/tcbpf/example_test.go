package tcbpf_test

import (
	"fmt"

	"github.com/netstation/netstation/fabric/tcbpf"
)

// With a seed, the fate of every frame is known in advance: a test can
// predict exactly how many of the next 20,000 frames a 5% loss drops.
func ExampleDecide() {
	p := tcbpf.Params{LossPPM: 5 * tcbpf.PPM / 100, Seed: 7}
	drops := 0
	for n := range uint64(20_000) {
		if drop, _ := tcbpf.Decide(p, tcbpf.Ingress, n); drop {
			drops++
		}
	}
	fmt.Println(drops)
	// Output: 995
}
