package main

import (
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"

	"github.com/bitgpu/bitgpu/internal/fsutil"
)

// handleSignals makes SIGINT and SIGTERM, while a command runs, remove the partial outputs in
// progress (the temporary files and directories registered with fsutil.RegisterTemp), print the
// one line "bitgpu: interrupted" and exit with 128 + the signal number, as a shell reports a
// process the signal killed: 130 for SIGINT, 143 for SIGTERM. Call the returned done when the
// command has finished, before printing its outcome: if a signal got there first, done never
// returns (the handler is exiting), so exactly one of the two reports.
func handleSignals() (done func()) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGINT, syscall.SIGTERM)
	var (
		mu       sync.Mutex
		finished bool // done ran first: the command's own outcome stands
	)
	stop := make(chan struct{})
	go func() {
		var sig os.Signal
		select {
		case sig = <-ch:
		case <-stop:
			return
		}
		mu.Lock()
		if finished {
			mu.Unlock()
			return
		}
		// mu stays locked: done blocks while the partial outputs go.
		fsutil.RemoveTemps()
		fmt.Fprintln(os.Stderr, "bitgpu: interrupted")
		code := 130
		if sig == syscall.SIGTERM {
			code = 143
		}
		os.Exit(code)
	}()
	return func() {
		mu.Lock()
		finished = true
		mu.Unlock()
		signal.Stop(ch)
		close(stop)
	}
}
