package display_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"image"
	"image/draw"
	"image/png"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/netstation/netstation/cpu/render"
	"github.com/netstation/netstation/peripherals/display"
)

// TestHTTP fetches the page, the snapshot, the stats and the first parts
// of the frame stream from the display's HTTP handler, and checks the
// pixels of the PNGs against the frame that was sent.
func TestHTTP(t *testing.T) {
	d := newDisplay(t)
	e := &render.Encoder{TileW: 20, TileH: 18, Encoding: "auto", Stream: 5}
	want := frame(render.Bars{}, 3)
	send(t, d, e, want, 1, nil)
	srv := httptest.NewServer(d.Handler("display0"))
	defer srv.Close()

	get := func(path string) *http.Response {
		t.Helper()
		r, err := http.Get(srv.URL + path)
		if err != nil || r.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %v %v", path, err, r)
		}
		return r
	}
	r := get("/")
	page, _ := io.ReadAll(r.Body)
	r.Body.Close()
	if !strings.Contains(string(page), `src="/stream.png"`) || !strings.Contains(string(page), "display0") {
		t.Fatalf("page: %s", page)
	}

	r = get("/snapshot.png")
	if ct := r.Header.Get("Content-Type"); ct != "image/png" {
		t.Fatalf("snapshot content type %q", ct)
	}
	mustEqual(t, decodePNG(t, r.Body), want)
	r.Body.Close()

	r = get("/stats.json")
	var st display.Stats
	if err := json.NewDecoder(r.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	r.Body.Close()

	r = get("/stream.png")
	defer r.Body.Close()
	mt, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/x-mixed-replace" {
		t.Fatalf("stream content type %q: %v", r.Header.Get("Content-Type"), err)
	}
	mr := multipart.NewReader(bufio.NewReader(r.Body), params["boundary"])
	part, err := mr.NextPart()
	if err != nil {
		t.Fatal(err)
	}
	mustEqual(t, decodePNG(t, part), want)
	// The next frame presented is the next part.
	next := frame(render.Mandelbrot{}, 9)
	send(t, d, e, next, 2, nil)
	if part, err = mr.NextPart(); err != nil {
		t.Fatal(err)
	}
	mustEqual(t, decodePNG(t, part), next)
}

func decodePNG(t *testing.T, r io.Reader) *image.RGBA {
	t.Helper()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	im, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	rgba := image.NewRGBA(im.Bounds())
	draw.Draw(rgba, rgba.Bounds(), im, im.Bounds().Min, draw.Src)
	return rgba
}
