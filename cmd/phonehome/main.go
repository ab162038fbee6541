// Command phonehome is a DNS filtering resolver that knows Microsoft's
// documented Windows connection endpoints. One binary, several subcommands:
//
//	phonehome serve [flags]       run the resolver
//	phonehome endpoints [flags]   list or export the endpoint catalog
//	phonehome check NAME...       what would happen to a query, and why
//	phonehome validate -config F  check a config file
//	phonehome history top|new|export  read the history file
//
// Run "phonehome help" for the list.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

// command is one subcommand: it parses its own flags from args and returns
// the process exit code.
type command struct {
	name, summary string
	run           func(args []string, stdout, stderr io.Writer) int
}

func commands() []command {
	return []command{
		{"endpoints", "list the Windows endpoint catalog, or export it as a block list", runEndpoints},
		{"serve", "run the DNS resolver", runServe},
		{"pause", "turn sinkholing into logging for a while in a running phonehome", runPause},
		{"history", "read the history file: top endpoints, new endpoints, export", runHistory},
		{"check", "say what phonehome would do with a query for a name, and why", runCheck},
		{"validate", "check a config file and print a summary", runValidate},
		{"version", "print the version", func(_ []string, stdout, _ io.Writer) int {
			fmt.Fprintln(stdout, "phonehome", version)
			return 0
		}},
	}
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run dispatches to a subcommand; it is main without the process around it,
// so the tests call it directly.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "-help" || args[0] == "--help" {
		usage(stdout)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	for _, c := range commands() {
		if c.name == args[0] {
			return c.run(args[1:], stdout, stderr)
		}
	}
	fmt.Fprintf(stderr, "phonehome: unknown command %q\n\n", args[0])
	usage(stderr)
	return 2
}

// helpCode is the exit code for a flag parse error: 0 when help was asked for.
func helpCode(err error) int {
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	return 2
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: phonehome <command> [flags]")
	fmt.Fprintln(w, "\ncommands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nRun \"phonehome <command> -h\" for a command's flags.")
}
