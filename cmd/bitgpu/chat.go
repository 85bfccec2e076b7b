package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

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
	addModelFlags(chatCmd, fmt.Sprintf("context length in tokens (default %d, at most the model's)", defaultCtx))
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
	sess, err := openSession(cmd)
	if err != nil {
		return err
	}
	defer closeInto(&err, sess)
	m, b, ctx := sess.m, sess.b, sess.ctx
	stderr := cmd.ErrOrStderr()
	stdout := cmd.OutOrStdout()
	c, err := runtime.NewChat(b, m.Tokenizer, m.Config.ChatTemplate, system, runtime.GenerateOptions{
		MaxTokens: n, Context: ctx, Sampler: s,
		Emit: func(text string) error {
			_, err := io.WriteString(stdout, text)
			return err
		},
	})
	if err != nil {
		return err
	}
	c.ParseSpecial, _ = f.GetBool("special")

	interactive := isTerminal(os.Stdin)
	in := bufio.NewReader(cmd.InOrStdin())
	var total runtime.GenerateStats // summed over the turns
	for {
		if interactive {
			fmt.Fprint(stderr, "> ")
		}
		line, readErr := in.ReadString('\n')
		if readErr != nil && readErr != io.EOF {
			return fmt.Errorf("stdin: %w", readErr)
		}
		line = strings.TrimRight(line, "\r\n")
		if strings.TrimSpace(line) == "/bye" {
			break
		}
		if strings.TrimSpace(line) != "" {
			st, err := c.Send(line)
			if errors.Is(err, runtime.ErrContextFull) {
				return fmt.Errorf("%w (--ctx %d; the model allows up to %d)", err, ctx, m.Config.ContextLength)
			}
			if err != nil {
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
		if readErr == io.EOF {
			break
		}
	}
	fmt.Fprintln(stderr, statsLine(total, ctx))
	return nil
}
