// Command proxy is the REWIND runtime's ActionLoop proxy: it serves /init and
// /run on :8080 and owns the launcher's process group. Run as PID 1 in the
// action image; see ../../README.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"rewind/proxy/actionloop"
)

// shutdownWait bounds how long SIGTERM waits for in-flight requests.
const shutdownWait = 10 * time.Second

func main() {
	// The kernel-helper roles re-execute this binary; they must not parse
	// the proxy's flags.
	if code, handled := actionloop.DispatchRole(os.Args); handled {
		os.Exit(code)
	}
	port := flag.Int("port", 8080, "TCP port to listen on (all interfaces)")
	debug := flag.Bool("debug", false, "diagnostics on stderr, allow re-init")
	version := flag.Bool("version", false, "print the version and exit")
	flag.Parse()
	if *version {
		fmt.Println(actionloop.Version)
		return
	}
	cfg, err := actionloop.Load(os.Environ())
	if err != nil || *port <= 0 || *port > 65535 {
		if err == nil {
			err = fmt.Errorf("invalid -port %d", *port)
		}
		fmt.Fprintln(os.Stderr, "proxy:", err)
		os.Exit(2)
	}
	cfg.Debug = cfg.Debug || *debug
	os.Exit(run(cfg, *port))
}

// run serves until SIGTERM/SIGINT, then shuts down gracefully.
func run(cfg actionloop.Config, port int) int {
	// Orphans of the launcher's tree must come to us even when we are not
	// PID 1 (e.g. under tini), so the reaper can collect them.
	if err := actionloop.BecomeSubreaper(); err != nil && cfg.Debug {
		fmt.Fprintln(os.Stderr, "proxy: cannot become a subreaper:", err)
	}
	srv := actionloop.NewServer(cfg, os.Stdout, os.Stderr)
	hs := &http.Server{
		Addr:              ":" + strconv.Itoa(port),
		Handler:           srv,
		ReadHeaderTimeout: 10 * time.Second, // no write timeout: runs are long
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	errc := make(chan error, 1)
	go func() { errc <- hs.ListenAndServe() }()

	code := 0
	select {
	case err := <-errc:
		fmt.Fprintln(os.Stderr, "proxy:", err)
		code = 1
	case <-sigs:
		ctx, cancel := context.WithTimeout(context.Background(), shutdownWait)
		if err := hs.Shutdown(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) && cfg.Debug {
			fmt.Fprintln(os.Stderr, "proxy: shutdown:", err)
		}
		cancel()
	}
	srv.Close()
	return code
}
