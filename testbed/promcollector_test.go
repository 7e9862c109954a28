package testbed

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// TestCollectorScrapeError: a testbed whose supervisor does not answer
// is a scrape error of that testbed, not a failed scrape nor silence.
func TestCollectorScrapeError(t *testing.T) {
	t.Setenv("NETSTATION_STATE_DIR", t.TempDir())
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewCollector("nosuch"))
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "netstation_scrape_error" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if m.GetLabel()[0].GetValue() == "nosuch" && m.GetGauge().GetValue() == 1 {
				return
			}
		}
	}
	t.Fatalf("no netstation_scrape_error{testbed=\"nosuch\"} 1 among %d families", len(mfs))
}
