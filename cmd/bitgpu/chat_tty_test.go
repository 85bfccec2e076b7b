package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"
	"github.com/stretchr/testify/require"

	"github.com/bitgpu/bitgpu/model"
)

// ttySession is bitgpu running on a pseudo-terminal (its stdin, stdout and stderr), as a user's
// shell would run it: Ctrl-C typed there becomes SIGINT for it, and line editing is live.
type ttySession struct {
	t    *testing.T
	cmd  *exec.Cmd
	tty  *os.File
	mu   sync.Mutex
	out  bytes.Buffer
	done chan struct{}
}

func startTTY(t *testing.T, args ...string) *ttySession {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), "BITGPU_TEST_MAIN=1", "XDG_CACHE_HOME="+t.TempDir(), "HOME="+t.TempDir())
	f, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 40, Cols: 200})
	require.NoError(t, err)
	s := &ttySession{t: t, cmd: cmd, tty: f, done: make(chan struct{})}
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := f.Read(buf)
			s.mu.Lock()
			s.out.Write(buf[:n])
			s.mu.Unlock()
			if err != nil {
				close(s.done)
				return
			}
		}
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = f.Close()
	})
	return s
}

// output is everything the terminal showed so far.
func (s *ttySession) output() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.out.String()
}

// waitFor waits until the terminal has shown want n times, failing the test after 20 s.
func (s *ttySession) waitFor(want string, n int) {
	s.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for strings.Count(s.output(), want) < n {
		if time.Now().After(deadline) {
			s.t.Fatalf("waited 20 s for %q ×%d; the terminal shows:\n%s", want, n, s.output())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// promptAfter waits until the terminal shows a fresh prompt after the last occurrence of marker:
// readline redraws the prompt on every key, so counting prompts says nothing; a prompt drawn after
// the output of the last action means the line editor is reading again (raw mode on).
func (s *ttySession) promptAfter(marker string) {
	s.t.Helper()
	s.showsAfter(marker, "> ")
}

// showsAfter waits until the terminal shows want after the last occurrence of marker.
func (s *ttySession) showsAfter(marker, want string) {
	s.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		out := s.output()
		if i := strings.LastIndex(out, marker); i >= 0 && strings.Contains(out[i+len(marker):], want) {
			return
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("waited 20 s for %q after %q; the terminal shows:\n%s", want, marker, out)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (s *ttySession) send(keys string) {
	s.t.Helper()
	_, err := s.tty.Write([]byte(keys))
	require.NoError(s.t, err)
}

// wait waits for the process to exit and returns its status.
func (s *ttySession) wait() int {
	s.t.Helper()
	err := s.cmd.Wait()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	require.NoError(s.t, err)
	return 0
}

// TestChatOnTerminal drives `bitgpu chat` on a pseudo-terminal: Ctrl-C while a reply streams
// stops the reply and returns to the prompt (the session goes on), the up arrow recalls the last
// message instead of printing ^[[A, /help and /clear are commands rather than messages, and
// Ctrl-C on an empty prompt ends the session with status 0.
func TestChatOnTerminal(t *testing.T) {
	path := filepath.Join(t.TempDir(), "long.gguf")
	opt := testSynth
	opt.Ctx = 4096 // a reply that runs to the context end takes seconds: time to interrupt it
	require.NoError(t, model.WriteSynthetic(path, opt))
	s := startTTY(t, "chat", "-m", path, "--device", "cpu", "--temp", "0", "-n", "-1")
	s.waitFor("> ", 1)

	s.send("hello\r")
	// Let the reply stream a while, then interrupt it.
	deadline := time.Now().Add(20 * time.Second)
	for len(s.output()) < 400 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	s.send("\x03")
	s.promptAfter("^C")
	require.NotContains(t, s.output(), "interrupted", "Ctrl-C stopped the reply, not the process")

	s.send("/help\r")
	s.promptAfter("Ctrl-C    while a reply streams")
	s.send("/clear\r")
	s.promptAfter("new conversation")

	// Up arrow: the history's last message comes back for editing; Ctrl-U-free check: it is
	// redrawn as text, and the raw escape sequence never reaches the screen as ^[[A.
	s.send("\x1b[A")
	s.showsAfter("new conversation", "> /clear")
	require.NotContains(t, s.output(), "^[[A")
	s.send("\x03") // discard the recalled line: the session goes on
	s.promptAfter("^C")

	s.send("\x03") // Ctrl-C on an empty prompt ends the chat
	select {
	case <-s.done:
	case <-time.After(20 * time.Second):
		t.Fatalf("chat did not end; the terminal shows:\n%s", s.output())
	}
	require.Equal(t, 0, s.wait(), s.output())
	require.Contains(t, s.output(), "prompt: ", "the stats line at the end")
}
