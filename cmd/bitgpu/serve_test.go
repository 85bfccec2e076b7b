package main

import (
	"bufio"
	"io"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestServeSIGTERMFinishesInFlight starts `bitgpu serve` on a free loopback port, starts a
// streamed request, sends SIGTERM while it streams, and requires the stream to finish with
// [DONE], new connections to be refused, and the process to exit 0.
func TestServeSIGTERMFinishesInFlight(t *testing.T) {
	cmd := exec.Command(os.Args[0], "serve", "--port", "0", "--device", "cpu", "--ctx", "256", "--parallel", "2")
	cmd.Env = append(os.Environ(), "BITGPU_TEST_MAIN=1")
	stderr, err := cmd.StderrPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	defer cmd.Process.Kill()
	lines := bufio.NewScanner(stderr)
	addr := ""
	re := regexp.MustCompile(`serving \S+ on (http://\S+)`)
	for addr == "" && lines.Scan() {
		if m := re.FindStringSubmatch(lines.Text()); m != nil {
			addr = m[1]
		}
	}
	require.NotEmpty(t, addr, "the ready line")
	var logBuf strings.Builder
	logDone := make(chan struct{})
	go func() {
		for lines.Scan() {
			logBuf.WriteString(lines.Text() + "\n")
		}
		close(logDone)
	}()

	resp, err := http.Get(addr + "/health")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, 200, resp.StatusCode)

	resp, err = http.Post(addr+"/v1/completions", "application/json",
		strings.NewReader(`{"prompt":"Once","max_tokens":200,"ignore_eos":true,"temperature":0,"stream":true}`))
	require.NoError(t, err)
	defer resp.Body.Close()
	r := bufio.NewReader(resp.Body)
	first, err := r.ReadString('\n')
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(first, "data: {"), first)

	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	rest, err := io.ReadAll(r)
	require.NoError(t, err)
	require.True(t, strings.HasSuffix(string(rest), "data: [DONE]\n\n"), "the in-flight stream finished: %q", tail(string(rest)))

	waited := make(chan error, 1)
	go func() { <-logDone; waited <- cmd.Wait() }()
	select {
	case err := <-waited:
		require.NoError(t, err, "exit status 0; stderr:\n%s", logBuf.String())
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not exit after SIGTERM")
	}
	log := logBuf.String()
	require.Contains(t, log, "POST /v1/completions 200 tokens=")
	require.Contains(t, log, "bitgpu: stopped")
	require.NotContains(t, log, "interrupted")
	require.Less(t, strings.Index(log, "shutting down"), strings.Index(log, "POST /v1/completions"),
		"the request was still in flight at SIGTERM:\n%s", log)
	_, err = http.Get(addr + "/health")
	require.Error(t, err, "no longer listening")
}

// tail is the last 200 bytes of s.
func tail(s string) string { return s[max(0, len(s)-200):] }
