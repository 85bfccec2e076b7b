package main

import (
	"bufio"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/chzyer/readline"
)

// errEndChat is what a chatInput returns when the user ends the session at the prompt (Ctrl-C on
// an empty line, like Ctrl-D).
var errEndChat = errors.New("end of chat")

// chatInput yields the user's messages: from a terminal with line editing and history
// (github.com/chzyer/readline), otherwise one message per input line with no prompt.
type chatInput interface {
	// Next returns the next message: io.EOF at the end of input, errEndChat when the user ends
	// the session (Ctrl-C at an empty prompt).
	Next() (string, error)
	Close() error
}

// pipeInput reads one message per line of a non-terminal stdin.
type pipeInput struct{ r *bufio.Reader }

func (p *pipeInput) Next() (string, error) {
	line, err := p.r.ReadString('\n')
	if err != nil && (err != io.EOF || line == "") {
		return "", err
	}
	return strings.TrimRight(line, "\r\n"), nil
}

func (p *pipeInput) Close() error { return nil }

// termInput reads messages from a terminal through readline: arrow keys, history (kept in the
// user cache directory's bitgpu/chat_history), Ctrl-C clearing a line or, on an empty one, ending
// the chat. A message spans several lines between two `"""` lines (as `ollama run` does), or
// when a line ends with a backslash (as llama-cli does).
type termInput struct{ rl *readline.Instance }

// newTermInput starts line editing on the terminal stdin, with prompts and echo on out.
func newTermInput(out io.Writer) (*termInput, error) {
	cfg := &readline.Config{
		Prompt: "> ", Stdout: out, Stderr: out, HistoryLimit: 1000,
		InterruptPrompt: "^C", EOFPrompt: "\n", DisableAutoSaveHistory: true,
	}
	if dir, err := os.UserCacheDir(); err == nil {
		if os.MkdirAll(filepath.Join(dir, "bitgpu"), 0o755) == nil {
			cfg.HistoryFile = filepath.Join(dir, "bitgpu", "chat_history")
		}
	}
	rl, err := readline.NewEx(cfg)
	if err != nil {
		return nil, err
	}
	return &termInput{rl: rl}, nil
}

func (t *termInput) Next() (string, error) {
	var parts []string
	block := false // inside a """ block
	for {
		if block || len(parts) > 0 {
			t.rl.SetPrompt(". ")
		} else {
			t.rl.SetPrompt("> ")
		}
		line, err := t.rl.Readline()
		if errors.Is(err, readline.ErrInterrupt) {
			if line == "" && !block && len(parts) == 0 {
				return "", errEndChat
			}
			parts, block = nil, false // Ctrl-C discards what was typed
			continue
		}
		if err != nil {
			return "", err // io.EOF: Ctrl-D
		}
		switch {
		case !block && len(parts) == 0 && strings.HasPrefix(line, `"""`):
			block = true
			if rest := strings.TrimPrefix(line, `"""`); rest != "" {
				parts = append(parts, rest)
			}
			continue
		case block:
			rest, end := strings.CutSuffix(line, `"""`)
			parts = append(parts, rest)
			if !end {
				continue
			}
		case strings.HasSuffix(line, `\`):
			parts = append(parts, strings.TrimSuffix(line, `\`))
			continue
		default:
			parts = append(parts, line)
		}
		msg := strings.Join(parts, "\n")
		if strings.TrimSpace(msg) != "" {
			_ = t.rl.SaveHistory(msg)
		}
		return msg, nil
	}
}

func (t *termInput) Close() error { return t.rl.Close() }
