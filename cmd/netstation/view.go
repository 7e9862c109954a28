package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/netstation/netstation/peripherals/display"
	"github.com/netstation/netstation/testbed"
	"github.com/spf13/cobra"
)

func newViewCmd() *cobra.Command {
	var tb, listen string
	c := &cobra.Command{
		Use:   "view [--listen 127.0.0.1:8080]",
		Short: "Serve a live page showing every display of the testbed",
		Long: `view serves a page on localhost with one live image per display peripheral.
Each image is an MJPEG-style multipart/x-mixed-replace stream of PNG frames
(exact pixels, no JavaScript), sent as the display presents frames (at least
once a second). Also served: /snapshot/NAME.png and /stats/NAME (JSON).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			name, err := pickTestbed(tb)
			if err != nil {
				return err
			}
			ln, err := net.Listen("tcp", listen)
			if err != nil {
				return err
			}
			srv := &http.Server{Handler: newViewHandler(name), ReadHeaderTimeout: 5 * time.Second}
			fmt.Printf("serving testbed %s on http://%s/\n", name, ln.Addr())
			go func() {
				<-cmd.Context().Done()
				srv.Close()
			}()
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		},
	}
	c.Flags().StringVarP(&tb, "testbed", "t", "", "testbed (default: the one up)")
	c.Flags().StringVar(&listen, "listen", "127.0.0.1:8080", "address to serve on (port 0: any free port)")
	return c
}

var viewPage = template.Must(template.New("view").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>netstation {{.Testbed}}</title>
<style>body{margin:0;background:#222;color:#ddd;font:14px sans-serif}
figure{margin:0 0 16px 0}img{display:block}figcaption{padding:4px 8px}</style></head>
<body>{{range .Displays}}<figure><img id="{{.Name}}" src="/stream/{{.Name}}" width="{{.Width}}" height="{{.Height}}" alt="{{.Name}}">
<figcaption>{{.Name}} {{.Addr}} {{.Width}}x{{.Height}} {{.Format}}</figcaption></figure>
{{else}}<p>testbed {{.Testbed}} has no display</p>{{end}}</body></html>
`))

// newViewHandler serves the live view of one testbed.
func newViewHandler(tb string) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		ds, err := testbed.Displays(tb)
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_ = viewPage.Execute(w, struct {
			Testbed  string
			Displays []testbed.NodePlan
		}{tb, ds})
	})
	mux.HandleFunc("GET /snapshot/{file}", func(w http.ResponseWriter, r *http.Request) {
		node := strings.TrimSuffix(r.PathValue("file"), ".png")
		img, _, err := testbed.Snapshot(r.Context(), tb, node, 0, 0)
		if err != nil {
			http.Error(w, err.Error(), http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", "image/png")
		w.Header().Set("Cache-Control", "no-store")
		_, _ = w.Write(img)
	})
	mux.HandleFunc("GET /stats/{node}", func(w http.ResponseWriter, r *http.Request) {
		st, err := testbed.DisplayStats(r.Context(), tb, r.PathValue("node"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(st)
	})
	mux.HandleFunc("GET /stream/{node}", func(w http.ResponseWriter, r *http.Request) {
		node := r.PathValue("node")
		display.StreamFrames(w, r, func(ctx context.Context, after uint64, wait time.Duration) ([]byte, uint64, error) {
			img, info, err := testbed.Snapshot(ctx, tb, node, after, wait)
			if err != nil && ctx.Err() == nil && after > 0 {
				fmt.Fprintln(os.Stderr, "view:", err)
			}
			return img, info.Frames, err
		})
	})
	return mux
}
