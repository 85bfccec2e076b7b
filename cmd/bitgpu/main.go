// Command bitgpu runs 1.58-bit (ternary) LLMs such as BitNet b1.58 2B4T on any Vulkan GPU, with a
// pure-Go CPU reference backend. Subcommands follow the command-line contract in the README.
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

// rootCmd is the `bitgpu` command; each subcommand file adds itself in an init function.
var rootCmd = &cobra.Command{
	Use:           "bitgpu",
	Short:         "Run 1.58-bit (ternary) LLMs on Vulkan GPUs",
	SilenceUsage:  true,
	SilenceErrors: true,
}

func main() {
	os.Exit(run(os.Args[1:]))
}

// run executes the command line args and returns the process exit status: 0 on success, 1 with
// one line "bitgpu: <error>" on stderr otherwise.
func run(args []string) int {
	rootCmd.SetArgs(args)
	if err := rootCmd.Execute(); err != nil {
		fmt.Fprintf(os.Stderr, "bitgpu: %v\n", err)
		return 1
	}
	return 0
}
