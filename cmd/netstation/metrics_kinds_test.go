package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"regexp"
	"sort"
	"syscall"
	"testing"

	"github.com/netstation/netstation/testbed"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// scrape starts `netstation metrics` with flags (e.g. "-t", b.name; none:
// every testbed up) and returns one scrape, parsed.
func scrape(t *testing.T, b *bed, flags ...string) map[string]*dto.MetricFamily {
	t.Helper()
	c := b.cmd(append([]string{"metrics", "--listen", "127.0.0.1:0"}, flags...)...)
	pr, pw := io.Pipe()
	c.Stderr = pw
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		c.Process.Signal(syscall.SIGTERM)
		c.Wait()
	}()
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	go io.Copy(io.Discard, pr)
	m := regexp.MustCompile(`http://(\S+)/metrics`).FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("metrics printed no address: %q", line)
	}
	resp, err := http.Get("http://" + m[1] + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("scrape: %d %v\n%s", resp.StatusCode, err, body)
	}
	return fams
}

// numberPaths lists the metric names a stats JSON's numbers map to, as
// testbed.StatsMetrics names them (maps: one name, labelled).
func numberPaths(prefix string, k testbed.StatsMetrics, obj map[string]any, path string, out map[string]bool) {
	for key, v := range obj {
		name := path + key
		switch v := v.(type) {
		case float64:
			if k.Gauges[name] {
				out[prefix+name] = true
			} else {
				out[prefix+name+"_total"] = true
			}
		case map[string]any:
			if k.Labels[name] != "" {
				if len(v) > 0 {
					out[prefix+name+"_total"] = true
				}
				continue
			}
			numberPaths(prefix, k, v, name+"_", out)
		}
	}
}

// TestMetricsEveryCounter: every number disk stats and display stats show
// is exported (the disk's capability refusals by reason included), with
// HELP text, counters named _total; and the TCP counters are there.
func TestMetricsEveryCounter(t *testing.T) {
	b := newBed(t)
	b.must("up", "-f", b.topo(b.name, threeNodes))
	b.must("demo", "capabilities", "-t", b.name)
	b.must("demo", "display", "-t", b.name, "--frames", "3")
	fams := scrape(t, b, "-t", b.name)

	for _, k := range []struct {
		args []string
		ks   testbed.StatsMetrics
	}{
		{[]string{"disk", "stats", "-t", b.name, "disk0", "-o", "json"}, testbed.DiskStatsMetrics},
		{[]string{"display", "stats", "-t", b.name, "display0", "-o", "json"}, testbed.DisplayStatsMetrics},
	} {
		var obj map[string]any
		if err := json.Unmarshal([]byte(b.must(k.args...)), &obj); err != nil {
			t.Fatal(err)
		}
		want := map[string]bool{}
		numberPaths(k.ks.Prefix, k.ks, obj, "", want)
		var missing []string
		for name := range want {
			f := fams[name]
			if f == nil || f.GetHelp() == "" {
				missing = append(missing, name)
			}
		}
		sort.Strings(missing)
		if len(missing) > 0 || len(want) < 10 {
			t.Errorf("%v: %d numbers, not exported: %v", k.args, len(want), missing)
		}
	}
	value := func(name, label, lv string) float64 {
		for _, m := range fams[name].GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == lv {
					return metricValue(m)
				}
			}
		}
		return -1
	}
	for _, c := range []struct {
		name, label, value string
		min                float64
	}{
		{"netstation_disk_refused_total", "reason", "bad_mac", 1},
		{"netstation_disk_refused_total", "reason", "revoked", 1},
		{"netstation_disk_requests_total", "op", "read", 1},
		{"netstation_display_frames_total", "node", "display0", 3},
		{"netstation_display_tiles_total", "node", "display0", 1},
		{"netstation_display_tiles_lost_total", "node", "display0", 0},
		{"netstation_tcp_active_opens_total", "node", "cpu0", 0},
		{"netstation_tcp_curr_estab", "node", "cpu0", 0},
	} {
		if v := value(c.name, c.label, c.value); v < c.min {
			t.Errorf("%s{%s=%q} = %v, want >= %v", c.name, c.label, c.value, v, c.min)
		}
	}
	if f := fams["netstation_disk_sessions"]; f == nil || f.GetType() != dto.MetricType_GAUGE {
		t.Errorf("netstation_disk_sessions: %v", f)
	}
}
