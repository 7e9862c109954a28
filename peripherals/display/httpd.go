package display

import (
	"context"
	"encoding/json"
	"fmt"
	"html/template"
	"net/http"
	"time"
)

// FrameSource returns the PNG of the first frame presented after the
// after-th (at once if one already was; after waiting up to wait for
// one otherwise, then the current frame) and the count of frames
// presented with it.
type FrameSource func(ctx context.Context, after uint64, wait time.Duration) (png []byte, frames uint64, err error)

// StreamFrames answers r with a multipart/x-mixed-replace stream of PNG
// frames (the "MJPEG" of browsers, with PNG parts: lossless, so pixels can
// be checked) until the client goes away or src fails. A frame is sent
// when presented, and the current one again every second.
func StreamFrames(w http.ResponseWriter, r *http.Request, src FrameSource) {
	ctx := r.Context()
	// Fail before the multipart header when there is no frame to show.
	img, frames, err := src(ctx, 0, 0)
	if err != nil {
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	const boundary = "netstationframe"
	w.Header().Set("Content-Type", "multipart/x-mixed-replace; boundary="+boundary)
	w.Header().Set("Cache-Control", "no-store")
	rc := http.NewResponseController(w)
	// A browser shows a part once the next boundary arrives, so every part
	// is followed by the boundary at once.
	if _, err := fmt.Fprintf(w, "--%s\r\n", boundary); err != nil {
		return
	}
	for {
		if _, err := fmt.Fprintf(w, "Content-Type: image/png\r\nContent-Length: %d\r\nX-Frames: %d\r\n\r\n", len(img), frames); err != nil {
			return
		}
		if _, err := w.Write(img); err != nil {
			return
		}
		if _, err := fmt.Fprintf(w, "\r\n--%s\r\n", boundary); err != nil {
			return
		}
		if err := rc.Flush(); err != nil {
			return
		}
		if img, frames, err = src(ctx, frames, time.Second); err != nil {
			return
		}
	}
}

// Source is the FrameSource of a display in this process.
func (d *Display) Source() FrameSource {
	return func(ctx context.Context, after uint64, wait time.Duration) ([]byte, uint64, error) {
		if wait > 0 {
			wctx, cancel := context.WithTimeout(ctx, wait)
			_, _ = d.Wait(wctx, after)
			cancel()
		}
		if err := ctx.Err(); err != nil {
			return nil, 0, err
		}
		return d.PNG() // encoded once per presented frame, whoever asks
	}
}

var displayPage = template.Must(template.New("display").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>{{.}}</title>
<style>body{background:#222;color:#ddd;font:14px sans-serif;margin:1em}img{max-width:100%;image-rendering:pixelated}
a{color:#8cf}a:visited{color:#c9f}a:hover,a:focus{color:#fff}</style>
</head><body><h1>{{.}}</h1><img id="frame" src="/stream.png" alt="{{.}}">
<p><a href="/snapshot.png">snapshot.png</a> · <a href="/stats.json">stats.json</a></p></body></html>
`))

// Handler serves the display over HTTP, as the peripheral does on port 80
// of its own stack: "/" a live page, "/stream.png" the multipart frame
// stream, "/snapshot.png" the frame on screen, "/stats.json" Stats.
func (d *Display) Handler(name string) http.Handler {
	src := d.Source()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_ = displayPage.Execute(w, name)
	})
	mux.HandleFunc("GET /snapshot.png", func(w http.ResponseWriter, r *http.Request) {
		img, frames, err := src(r.Context(), 0, 0)
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "image/png")
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("X-Frames", fmt.Sprint(frames))
		_, _ = w.Write(img)
	})
	mux.HandleFunc("GET /stream.png", func(w http.ResponseWriter, r *http.Request) { StreamFrames(w, r, src) })
	mux.HandleFunc("GET /stats.json", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(d.Stats())
	})
	return mux
}
