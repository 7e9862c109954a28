package testbed

import (
	"context"
	"encoding/json"
	"fmt"
	"html/template"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/netstation/netstation/peripherals/display"
)

var viewPage = template.Must(template.New("view").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>netstation {{.Testbed}}</title>
<style>body{margin:0;background:#222;color:#ddd;font:14px sans-serif}
figure{margin:0 0 16px 0}img{display:block}figcaption{padding:4px 8px}</style></head>
<body>{{range .Displays}}<figure><img id="{{.Name}}" src="/stream/{{.Name}}" width="{{.Width}}" height="{{.Height}}" alt="{{.Name}}">
<figcaption>{{.Name}} {{.Addr}} {{.Width}}x{{.Height}} {{.Format}}</figcaption></figure>
{{else}}<p>testbed {{.Testbed}} has no display</p>{{end}}</body></html>
`))

// ViewHandler serves the live view of testbed tb: a page with one image
// per display (GET /), each a multipart/x-mixed-replace stream of PNG
// frames sent as the display presents them (GET /stream/NAME), and
// GET /snapshot/NAME.png and GET /stats/NAME (JSON). Errors go to the
// client; a broken stream is also said on stderr.
func ViewHandler(tb string) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		ds, err := Displays(tb)
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_ = viewPage.Execute(w, struct {
			Testbed  string
			Displays []NodePlan
		}{tb, ds})
	})
	mux.HandleFunc("GET /snapshot/{file}", func(w http.ResponseWriter, r *http.Request) {
		node := strings.TrimSuffix(r.PathValue("file"), ".png")
		img, _, err := Snapshot(r.Context(), tb, node, 0, 0)
		if err != nil {
			http.Error(w, err.Error(), http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", "image/png")
		w.Header().Set("Cache-Control", "no-store")
		_, _ = w.Write(img)
	})
	mux.HandleFunc("GET /stats/{node}", func(w http.ResponseWriter, r *http.Request) {
		st, err := DisplayStats(r.Context(), tb, r.PathValue("node"))
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
			img, info, err := Snapshot(ctx, tb, node, after, wait)
			if err != nil && ctx.Err() == nil && after > 0 {
				fmt.Fprintln(os.Stderr, "view:", err)
			}
			return img, info.Frames, err
		})
	})
	return mux
}
