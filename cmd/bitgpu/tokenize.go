package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/bitgpu/bitgpu/model"
)

// tokenizeCmd is `bitgpu tokenize -m FILE TEXT`: the token ids of TEXT, space-separated, no BOS.
var tokenizeCmd = &cobra.Command{
	Use:   "tokenize [-m FILE] TEXT",
	Short: "Print the token ids of TEXT, space-separated, without BOS",
	Long: `Print the token ids of TEXT on one line, space-separated, without BOS. FILE is a GGUF
file (its tokenizer.ggml.* metadata) or a Hugging Face checkpoint directory (tokenizer.json);
without -m, the built-in model's tokenizer.
Special tokens written in TEXT, such as <|eot_id|>, become their ids unless --no-parse-special.`,
	Args: cobra.ExactArgs(1),
	RunE: func(cmd *cobra.Command, args []string) error {
		path, _ := cmd.Flags().GetString("model")
		noSpecial, _ := cmd.Flags().GetBool("no-parse-special")
		tok, closeFn, err := loadTokenizer(path)
		if err != nil {
			return err
		}
		defer closeFn()
		ids := tok.Encode(args[0], !noSpecial)
		s := make([]string, len(ids))
		for i, id := range ids {
			s[i] = strconv.Itoa(id)
		}
		_, err = fmt.Fprintln(cmd.OutOrStdout(), strings.Join(s, " "))
		return err
	},
}

func init() {
	tokenizeCmd.Flags().StringP("model", "m", "", "model: GGUF file or Hugging Face directory (default: the built-in model)")
	tokenizeCmd.Flags().Bool("no-parse-special", false, "treat special-token text as plain text")
	rootCmd.AddCommand(tokenizeCmd)
}

// loadTokenizer reads only the tokenizer of a model file or directory (no tensor checks).
func loadTokenizer(path string) (model.Tokenizer, func(), error) {
	if path == "" {
		m, err := openModel("")
		if err != nil {
			return nil, nil, err
		}
		return m.Tokenizer, func() { m.Close() }, nil
	}
	st, err := os.Stat(path)
	if err != nil {
		return nil, nil, err
	}
	if st.IsDir() {
		tok, err := model.NewTokenizerFromHF(path)
		return tok, func() {}, err
	}
	g, err := model.OpenGGUF(path)
	if err != nil {
		return nil, nil, err
	}
	tok, err := model.NewTokenizerFromGGUF(g.Meta)
	if err != nil {
		g.Close()
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	return tok, func() { g.Close() }, nil
}
