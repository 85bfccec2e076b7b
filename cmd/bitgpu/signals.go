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
		for {
			select {
			case sig = <-ch:
			case <-stop:
				return
			}
			if sig == syscall.SIGINT && interrupted() {
				continue // a command took Ctrl-C for itself (chat stops the reply)
			}
			if sig == syscall.SIGTERM && terminated() {
				continue // serve shuts down gracefully
			}
			break
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

// interruptHook is the function onInterrupt installed, or nil.
var interruptHook struct {
	sync.Mutex
	fn func()
}

// onInterrupt makes SIGINT call fn instead of ending the process, until the returned release is
// called: chat uses it so Ctrl-C stops the reply being generated. SIGTERM still ends the process.
func onInterrupt(fn func()) (release func()) {
	interruptHook.Lock()
	interruptHook.fn = fn
	interruptHook.Unlock()
	return func() {
		interruptHook.Lock()
		interruptHook.fn = nil
		interruptHook.Unlock()
	}
}

// interrupted runs the onInterrupt hook and reports whether there was one.
func interrupted() bool {
	interruptHook.Lock()
	fn := interruptHook.fn
	interruptHook.Unlock()
	if fn == nil {
		return false
	}
	fn()
	return true
}
