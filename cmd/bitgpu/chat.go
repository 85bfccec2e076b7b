package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/bitgpu/bitgpu"
	"github.com/bitgpu/bitgpu/runtime"
)

// chatCmd is `bitgpu chat [-m FILE] [--system TEXT] [--device auto|gpu|cpu|cpuref]`: an interactive
// conversation over stdin/stdout with the model's chat template.
var chatCmd = &cobra.Command{
	Use:   "chat [-m FILE] [--system TEXT]",
	Short: "Chat with the model: user lines on stdin, replies on stdout",
	Long: `Chat with the model. Each line read from stdin is a user message; the reply is streamed to
stdout and ended with a newline. End of input or a line "/bye" ends the chat. The conversation is
laid out with the chat template stored in the model file (BitNet b1.58 or LLaMA-3 layout). The KV
cache is kept between turns, so only the new turn is processed; when the context is full the
oldest exchanges are dropped and the rest processed again. A reply ends at the end-of-turn
token, after -n tokens, or at the end of the context. Sampling flags as for generate. One stats
line on stderr at the end. Special-token text typed in a message (such as "<|eot_id|>") is
plain text unless --special is given; the template's own markers are always special.`,
	Args: cobra.NoArgs,
	RunE: runChat,
}

func init() {
	f := chatCmd.Flags()
	addModelFlags(chatCmd, fmt.Sprintf("context length in tokens (default %d, at most the model's)", bitgpu.DefaultContext))
	f.String("system", "", "system message")
	f.Bool("special", false, "parse special-token text (such as <|eot_id|>) typed in messages as the special token; by default it is plain text")
	f.IntP("n-predict", "n", -1, "most tokens per reply; -1 until end of turn or context")
	addSamplingFlags(chatCmd)
	rootCmd.AddCommand(chatCmd)
}

// runChat is the chat command.
func runChat(cmd *cobra.Command, _ []string) (err error) {
	f := cmd.Flags()
	s, _, err := samplerFromFlags(cmd)
	if err != nil {
		return err
	}
	n, _ := f.GetInt("n-predict")
	if n < -1 || n == 0 {
		return fmt.Errorf("-n %d: must be positive, or -1 for no limit", n)
	}
	system, _ := f.GetString("system")
	sess, err := openSession(cmd, 0)
	if err != nil {
		return err
	}
	defer closeInto(&err, sess)
	m, b, ctx := sess.m, sess.b, sess.ctx
	stderr := cmd.ErrOrStderr()
	stdout := cmd.OutOrStdout()
	c, err := runtime.NewChat(b, m.Tokenizer, m.Config.ChatTemplate, system, runtime.GenerateOptions{
		MaxTokens: n, Context: ctx, Sampler: s,
		Progress: progressOut(stderr), ProgressAfter: runtime.DefaultProgressAfter, // a bar for a long prefill on a terminal
	})
	if err != nil {
		return err
	}
	c.ParseSpecial, _ = f.GetBool("special")

	interactive := isTerminal(os.Stdin) && cmd.InOrStdin() == os.Stdin
	var input chatInput = &pipeInput{r: bufio.NewReader(cmd.InOrStdin())}
	if interactive {
		ti, err := newTermInput(stderr)
		if err != nil {
			return fmt.Errorf("stdin: %w", err)
		}
		input = ti
		defer ti.Close()
		fmt.Fprintln(stderr, "bitgpu: chat — /help for commands; Ctrl-C stops a reply, Ctrl-C on an empty line or Ctrl-D ends")
	}
	var total runtime.GenerateStats // summed over the turns
	for {
		line, readErr := input.Next()
		if readErr == io.EOF || errors.Is(readErr, errEndChat) {
			break
		}
		if readErr != nil {
			return fmt.Errorf("stdin: %w", readErr)
		}
		switch strings.TrimSpace(line) {
		case "":
			continue
		case "/bye", "/exit":
			fmt.Fprintln(stderr, statsLine(total, ctx))
			return nil
		case "/clear":
			c.Reset()
			fmt.Fprintln(stderr, "bitgpu: new conversation")
			continue
		case "/help", "/?":
			fmt.Fprint(stderr, chatHelp)
			continue
		}
		st, err := sendInterruptible(c, line, !interactive, stdout)
		if n := c.Dropped(); n > 0 {
			fmt.Fprintf(stderr, "bitgpu: the conversation outgrew the context (--ctx %d): dropped the %d oldest messages\n", ctx, n)
		}
		if errors.Is(err, runtime.ErrContextFull) {
			return fmt.Errorf("%w (--ctx %d; the model allows up to %d)", err, ctx, m.Config.ContextLength)
		}
		if err != nil && !errors.Is(err, context.Canceled) {
			return err
		}
		if _, err := io.WriteString(stdout, "\n"); err != nil {
			return err
		}
		total.PromptTokens += st.PromptTokens
		total.PrefillTime += st.PrefillTime
		total.Tokens = append(total.Tokens, st.Tokens...)
		total.DecodeCalls += st.DecodeCalls
		total.DecodeTime += st.DecodeTime
	}
	fmt.Fprintln(stderr, statsLine(total, ctx))
	return nil
}

// chatHelp is what /help prints.
const chatHelp = `  /help     this text
  /clear    start a new conversation (the system message stays)
  /exit     end the chat (also /bye, Ctrl-D, or Ctrl-C on an empty line)
  """       start or end a message of several lines; a line ending in \ continues too
  Ctrl-C    while a reply streams: stop it and return to the prompt
`

// sendInterruptible sends one user message and streams the reply to out. SIGINT (Ctrl-C) while
// the reply runs stops it (the reply so far stays in the conversation) instead of ending the
// process: the error is then context.Canceled. With escape, the reply is written as one line —
// backslash as \\ and newline as \n — so piped replies map one to one onto input lines.
func sendInterruptible(c *runtime.Chat, msg string, escape bool, out io.Writer) (runtime.GenerateStats, error) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	release := onInterrupt(cancel)
	defer release()
	opts := c.Options()
	opts.Ctx = ctx
	opts.Emit = func(text string) error {
		if escape {
			text = strings.NewReplacer(`\`, `\\`, "\n", `\n`).Replace(text)
		}
		_, err := io.WriteString(out, text)
		return err
	}
	c.SetOptions(opts)
	return c.Send(msg)
}
