package testbed

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"unicode"

	"github.com/netstation/netstation/stack"
	"github.com/prometheus/client_golang/prometheus"
)

// StatsMetrics says how one kind's stats op (disk stats, display stats)
// becomes metrics: every number it shows is exported.
type StatsMetrics struct {
	Prefix  string          // metric name prefix, e.g. netstation_disk_
	Command string          // the command that shows the same figures
	Gauges  map[string]bool // keys that are levels, not counters
	// Labels lists the maps (by key) whose keys are a label's values,
	// with the label's name; other objects are flattened into names.
	Labels map[string]string
}

// How disk stats and display stats become metrics (the CLI's tests check
// every number the commands show is exported).
var (
	DiskStatsMetrics = StatsMetrics{Prefix: "netstation_disk_", Command: "netstation disk stats",
		Gauges: map[string]bool{"sessions": true, "capability_version": true},
		Labels: map[string]string{"requests": "op", "errors": "code", "drops": "reason", "refused": "reason"}}
	DisplayStatsMetrics = StatsMetrics{Prefix: "netstation_display_", Command: "netstation display stats",
		Gauges: map[string]bool{"width": true, "height": true, "frame": true, "stream": true, "fps": true, "avg_fps": true},
		Labels: map[string]string{"drops": "reason"}}
)

// collect emits one metric per number of raw (a stats op's JSON answer):
// counters as <prefix><path>_total, gauges as <prefix><path>, maps of
// numbers labelled by their keys (k.Labels), other objects flattened with "_".
func (k StatsMetrics) collect(ch chan<- prometheus.Metric, raw json.RawMessage, base []string) {
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	var top map[string]any
	if d.Decode(&top) != nil {
		return
	}
	k.walk(ch, "", top, base)
}

func (k StatsMetrics) walk(ch chan<- prometheus.Metric, path string, obj map[string]any, base []string) {
	keys := make([]string, 0, len(obj))
	for key := range obj {
		keys = append(keys, key)
	}
	sort.Strings(keys)
	for _, key := range keys {
		name := path + key
		switch v := obj[key].(type) {
		case json.Number:
			f, err := v.Float64()
			if err != nil {
				continue
			}
			k.emit(ch, name, "", "", f, base)
		case map[string]any:
			if label := k.Labels[name]; label != "" {
				mk := make([]string, 0, len(v))
				for x := range v {
					mk = append(mk, x)
				}
				sort.Strings(mk)
				for _, x := range mk {
					if n, ok := v[x].(json.Number); ok {
						if f, err := n.Float64(); err == nil {
							k.emit(ch, name, label, x, f, base)
						}
					}
				}
				continue
			}
			k.walk(ch, name+"_", v, base)
		}
	}
}

func (k StatsMetrics) emit(ch chan<- prometheus.Metric, name, label, value string, f float64, base []string) {
	typ, metric, help := prometheus.CounterValue, k.Prefix+name+"_total", fmt.Sprintf("%q as %s shows it (a counter).", name, k.Command)
	if k.Gauges[name] {
		typ, metric, help = prometheus.GaugeValue, k.Prefix+name, fmt.Sprintf("%q as %s shows it (a level).", name, k.Command)
	}
	labels := append([]string{}, nodeLabels...)
	values := append([]string{}, base...)
	if label != "" {
		labels, values = append(labels, label), append(values, value)
	}
	ch <- prometheus.MustNewConstMetric(prometheus.NewDesc(metric, help, labels, nil), typ, f, values...)
}

// collectTCP exports every TCP counter of a stack as netstation_tcp_<name>_total
// (CurrEstab as the gauge netstation_tcp_curr_estab).
func collectTCP(ch chan<- prometheus.Metric, s stack.TCPStats, base []string) {
	v := reflect.ValueOf(s)
	for i := range v.NumField() {
		f := v.Type().Field(i)
		name := snake(f.Name)
		switch x := v.Field(i); x.Kind() {
		case reflect.Uint64:
			ch <- prometheus.MustNewConstMetric(prometheus.NewDesc("netstation_tcp_"+name+"_total",
				fmt.Sprintf("TCP %s of the user-level stack (stack.TCPStats.%s).", strings.ReplaceAll(name, "_", " "), f.Name),
				nodeLabels, nil), prometheus.CounterValue, float64(x.Uint()), base...)
		case reflect.Int:
			ch <- prometheus.MustNewConstMetric(prometheus.NewDesc("netstation_tcp_"+name,
				fmt.Sprintf("TCP %s of the user-level stack, now (stack.TCPStats.%s).", strings.ReplaceAll(name, "_", " "), f.Name),
				nodeLabels, nil), prometheus.GaugeValue, float64(x.Int()), base...)
		}
	}
}

// snake turns a Go field name into snake case: GSOOut -> gso_out.
func snake(s string) string {
	r := []rune(s)
	var b strings.Builder
	for i, c := range r {
		if unicode.IsUpper(c) && i > 0 && (unicode.IsLower(r[i-1]) || i+1 < len(r) && unicode.IsLower(r[i+1])) {
			b.WriteByte('_')
		}
		b.WriteRune(unicode.ToLower(c))
	}
	return b.String()
}
