package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/netstation/netstation/testbed"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
)

// addStatusWatch gives the status command -w/--watch and --interval: the
// table redrawn with rates computed between two samples.
func addStatusWatch(c *cobra.Command) {
	var watch bool
	var interval string
	c.Flags().BoolVarP(&watch, "watch", "w", false, "redraw the table every interval, with rates (rx/tx pps, drops/s)")
	c.Flags().StringVar(&interval, "interval", "1s", "watch interval")
	once := c.RunE
	c.Use = "status [-t NAME] [-o table|json] [-w [--interval 1s]]"
	c.RunE = func(cmd *cobra.Command, args []string) error {
		if !watch {
			return once(cmd, args)
		}
		every, err := parseInterval(interval)
		if err != nil {
			return err
		}
		name, _ := cmd.Flags().GetString("testbed")
		if output, _ := cmd.Flags().GetString("output"); output != "table" && output != "" {
			return errors.New("status -w draws a table; -o json takes one sample")
		}
		return watchStatus(cmd.Context(), os.Stdout, name, every, isTTY(os.Stdout))
	}
}

// isTTY reports whether f is a terminal (the watch then redraws in place).
func isTTY(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// watchStatus samples the testbeds every interval and draws each with the
// rates since the previous sample, until ctx ends.
func watchStatus(ctx context.Context, w io.Writer, name string, every time.Duration, clear bool) error {
	prev := map[string]testbed.NodeStatus{}
	var prevAt time.Time
	for {
		names := []string{name}
		if name == "" {
			var err error
			if names, err = testbed.List(); err != nil {
				return err
			}
		}
		now := time.Now()
		var b strings.Builder
		if len(names) == 0 {
			fmt.Fprintln(&b, "no testbed is up")
		}
		for i, n := range names {
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			st, err := testbed.GetStatus(cctx, n)
			cancel()
			if i > 0 {
				fmt.Fprintln(&b)
			}
			if err != nil {
				fmt.Fprintln(&b, err)
				continue
			}
			printStatusRates(&b, st, prev, now.Sub(prevAt))
			for _, ns := range st.Nodes {
				prev[st.Name+"/"+ns.Name] = ns
			}
		}
		prevAt = now
		if clear {
			fmt.Fprint(w, "\033[H\033[2J")
		} else {
			fmt.Fprintf(w, "--- %s\n", now.Format(time.TimeOnly))
		}
		fmt.Fprint(w, b.String())
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(every):
		}
	}
}

// rate is the per-second change of a counter; zero when there is no
// previous sample or the counter went back (a restarted peripheral).
func rate(cur, old uint64, dt time.Duration, have bool) float64 {
	if !have || dt <= 0 || cur < old {
		return 0
	}
	return float64(cur-old) / dt.Seconds()
}

func printStatusRates(w io.Writer, st testbed.Status, prev map[string]testbed.NodeStatus, dt time.Duration) {
	fmt.Fprintf(w, "testbed %s (%s): %s, templates %s", st.Name, st.Subnet, st.Phase, st.Templates)
	if st.Error != "" {
		fmt.Fprintf(w, ": %s", st.Error)
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tKIND\tIP\tSTATE\tRESTARTS\tRX PPS\tTX PPS\tDROPS/S\tRX\tTX\tDROPS\tSPOOF DROPS\tLINK")
	for _, n := range st.Nodes {
		p, have := prev[st.Name+"/"+n.Name]
		link, spoof := "", uint64(0)
		if n.Link != nil {
			link, spoof = formatLink(n.Link.Params), n.Link.TemplateDrops
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%.0f\t%.0f\t%.0f\t%d\t%d\t%d\t%d\t%s\n", n.Name, n.Kind, n.IP, n.State, n.Restarts,
			rate(n.RX, p.RX, dt, have), rate(n.TX, p.TX, dt, have), rate(n.Drops, p.Drops, dt, have),
			n.RX, n.TX, n.Drops, spoof, link)
	}
	tw.Flush()
}

func newMetricsCmd() *cobra.Command {
	var name, listen string
	c := &cobra.Command{
		Use:   "metrics [--listen 127.0.0.1:9100] [-t NAME]",
		Short: "Serve every testbed's counters in Prometheus text format on /metrics",
		Long: `Serve the counters of every testbed that is up (or of one, with -t) on
http://LISTEN/metrics in Prometheus text format: per node frames and bytes,
drops by reason, per-socket datagrams and drops, ARP, fragments, link
impairments (kernel and link layer), template (spoofing) drops, restarts,
every TCP counter of the user-level stacks (netstation_tcp_*), and every
number disk stats and display stats show (netstation_disk_*: requests by op,
capability refusals by reason as netstation_disk_refused_total{reason}, bytes,
transfers, ...; netstation_display_*: frames, tiles, tiles lost, drops by
reason, ...). Counters end in _total; levels (sessions, fps, resolution)
do not. Each scrape asks the supervisors afresh. Runs until Ctrl-C.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			reg := prometheus.NewRegistry()
			reg.MustRegister(testbed.NewCollector(name))
			mux := http.NewServeMux()
			mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError}))
			ln, err := net.Listen("tcp", listen)
			if err != nil {
				return err
			}
			srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
			fmt.Fprintf(os.Stderr, "serving metrics on http://%s/metrics\n", ln.Addr())
			go func() {
				<-cmd.Context().Done()
				sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				defer cancel()
				_ = srv.Shutdown(sctx)
			}()
			if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		},
	}
	c.Flags().StringVarP(&name, "testbed", "t", "", "testbed name (default: every testbed)")
	c.Flags().StringVar(&listen, "listen", "127.0.0.1:9100", "address to serve on")
	return c
}
