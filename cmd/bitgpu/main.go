// Command bitgpu runs 1.58-bit (ternary) LLMs such as BitNet b1.58 2B4T on any Vulkan GPU, with a
// pure-Go CPU reference backend. Subcommands follow the command-line contract in the README.
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/bitgpu/bitgpu/model"
)

// rootCmd is the `bitgpu` command; each subcommand file adds itself in an init function.
var rootCmd = &cobra.Command{
	Use:           "bitgpu",
	Short:         "Run 1.58-bit (ternary) LLMs on Vulkan GPUs",
	SilenceUsage:  true,
	SilenceErrors: true,
}

// verbose is the global -v/--verbose flag: the device and backend chosen, the memory plan, the
// context size, the random seed.
var verbose bool

func init() {
	rootCmd.PersistentFlags().BoolVarP(&verbose, "verbose", "v", false, "print the device and backend chosen, the memory plan (weights, KV cache, scratch), the context size and a random seed on stderr")
}

func main() {
	os.Exit(run(os.Args[1:]))
}

// run executes the command line args and returns the process exit status: 0 on success, 1 with
// one line "bitgpu: <error>" on stderr otherwise. SIGINT and SIGTERM during the command exit the
// process from handleSignals (130 or 143) instead.
func run(args []string) int {
	rootCmd.SetArgs(args)
	if cobraInitVersion != nil {
		cobraInitVersion()
	}
	done := handleSignals() // SIGINT/SIGTERM: partial outputs removed, "bitgpu: interrupted", 130/143
	// A fault on a memory-mapped model file (truncated in place while in use) becomes an error.
	err := model.CatchFault(rootCmd.Execute)
	done()
	// With BITGPU_VALIDATE=1 every validation message is shown, and any makes the run fail.
	if verr := reportValidation(os.Stderr); err == nil {
		err = verr
	}
	if err != nil {
		// Errors quote file contents (names, keys): escaped, so the report stays one line.
		fmt.Fprintf(os.Stderr, "bitgpu: %s\n", printable(err.Error()))
		return 1
	}
	return 0
}
