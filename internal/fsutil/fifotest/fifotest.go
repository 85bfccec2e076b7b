//go:build unix

// Package fifotest helps tests that hand a FIFO to code which must refuse it rather than block.
package fifotest

import (
	"os"
	"syscall"
	"testing"
	"time"
)

// Within runs f in a goroutine and returns its error. If f has not returned after timeout — a
// FIFO opened for reading waits for a writer — it unblocks the reader by opening fifo for writing
// and fails the test with what, so a regression fails instead of hanging.
func Within(t *testing.T, fifo string, timeout time.Duration, what string, f func() error) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- f() }()
	select {
	case err := <-done:
		return err
	case <-time.After(timeout):
		if w, err := os.OpenFile(fifo, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
			_ = w.Close()
		}
		t.Fatalf("%s blocked on the FIFO %s", what, fifo)
		return nil
	}
}
