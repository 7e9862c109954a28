package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/netstation/netstation/peripherals"
	"github.com/netstation/netstation/peripherals/example/kv"
)

// TestExampleKind brings the example kind of docs/peripherals.md up from a
// topology file (`kind: kv` with its params) beside a cpu, talks to it
// from the host's kernel through host access over its line protocol, and
// reads its counters back through status and its own control op.
func TestExampleKind(t *testing.T) {
	b := newBed(t)
	b.must("up", "-f", b.topo(b.name, `host_access: {}
nodes:
  - {name: cpu0, kind: cpu}
  - name: kv0
    kind: kv
    params: {port: "7071", max_keys: "2"}
`))
	defer b.must("down", b.name)
	st := b.status(b.name)
	var ip string
	for _, n := range st.Nodes {
		if n.Name == "kv0" {
			ip = n.IP
			if n.Kind != "kv" || !strings.Contains(strings.Join(n.Services, " "), "kv/tcp:7071") {
				t.Errorf("kv0 in status: kind %q, services %v", n.Kind, n.Services)
			}
		}
	}
	if ip == "" {
		t.Fatalf("no kv0 in status %+v", st)
	}
	d := net.Dialer{Timeout: 10 * time.Second}
	c, err := d.Dial("tcp4", net.JoinHostPort(ip, "7071"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	r := bufio.NewReader(c)
	for _, x := range []struct{ req, want string }{
		{"SET greeting hello from the host", "OK"},
		{"SET n 1", "OK"},
		{"SET m 2", "ERR full"},
		{"GET greeting", "VALUE hello from the host"},
		{"GET nothing", "NOTFOUND"},
	} {
		fmt.Fprintf(c, "%s\r\n", x.req)
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("%s: %v", x.req, err)
		}
		if got := strings.TrimSuffix(line, "\n"); got != x.want {
			t.Errorf("%s: got %q, want %q", x.req, got, x.want)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var ks kv.Stats
	if err := b.nodeCall(ctx, "kv0", string(kv.OpStats), nil, &ks, nil); err != nil {
		t.Fatal(err)
	}
	if want := (kv.Stats{Keys: 2, Gets: 2, Sets: 2, Misses: 1, Errors: 1}); ks != want {
		t.Errorf("kv-stats %+v, want %+v", ks, want)
	}
	var ps peripherals.Status
	if err := b.nodeCall(ctx, "kv0", string(peripherals.OpStatus), nil, &ps, nil); err != nil {
		t.Fatal(err)
	}
	if ps.Counters["kv_sets"] != 2 || ps.Counters["kv_gets"] != 2 {
		t.Errorf("kv0 status counters %v", ps.Counters)
	}
	// The kind's counters reach Prometheus too.
	mc := b.cmd("metrics", "--listen", "127.0.0.1:0")
	pr, pw := io.Pipe()
	mc.Stderr = pw
	if err := mc.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		mc.Process.Signal(syscall.SIGTERM)
		mc.Wait()
	}()
	first, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	go io.Copy(io.Discard, pr)
	m := regexp.MustCompile(`http://(\S+)/metrics`).FindStringSubmatch(first)
	if m == nil {
		t.Fatalf("metrics printed no address: %q", first)
	}
	resp, err := http.Get("http://" + m[1] + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !regexp.MustCompile(`netstation_kind_counter_total\{[^}]*counter="kv_sets"[^}]*node="kv0"[^}]*\} 2\b`).Match(body) {
		t.Errorf("no kv_sets = 2 series for kv0 in the metrics:\n%s", grepLines(body, "netstation_kind_counter_total"))
	}

	// A topology that gives the kind a parameter it does not take is
	// refused before anything is created, naming the line.
	out, err := b.run("up", "-f", b.topo(b.name+"x", "nodes:\n  - name: kv0\n    kind: kv\n    params: {colour: blue}\n"))
	if err == nil || !strings.Contains(out, `kind kv has no parameter "colour"`) || !strings.Contains(out, ":5:") {
		t.Errorf("bad params: err %v, output %s", err, out)
	}
}

// grepLines returns the lines of b that contain s.
func grepLines(b []byte, s string) string {
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, s) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
