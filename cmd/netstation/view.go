package main

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

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
			srv := &http.Server{Handler: testbed.ViewHandler(name), ReadHeaderTimeout: 5 * time.Second}
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
