// Command kiln is the CI and build infrastructure of the OCaml ecosystem in one binary:
// the pipeline engine and its console, the sandboxed builder, the build fleet and the
// services built on them.
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

// rootCmd is the top of the command tree. Each command group registers itself on it
// from its own file with addCommand in an init function.
var rootCmd = &cobra.Command{
	Use:           "kiln",
	Short:         "CI and build infrastructure for the OCaml ecosystem",
	SilenceUsage:  true,
	SilenceErrors: true,
}

func addCommand(c *cobra.Command) { rootCmd.AddCommand(c) }

func main() {
	if err := rootCmd.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "kiln:", err)
		os.Exit(1)
	}
}
