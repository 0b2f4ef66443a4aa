// Command pipeline retrains per-subject Flux LoRA models on Replicate through a declarative HCL
// pipeline: image checks, parameter selection, training, a loss gate, test generations with a
// plastic-skin guard, and version pruning, with Terraform-style plan/apply and resumable state.
//
//	pipeline plan examples/retrain.hcl
//	pipeline apply -simulate -auto-approve examples/retrain.hcl
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/pipeline-dev/pipeline/pipeline"
	"github.com/pipeline-dev/pipeline/pipeline/engine"
	"github.com/pipeline-dev/pipeline/pipeline/view"
	"github.com/pipeline-dev/pipeline/stages/generate"
	"github.com/pipeline-dev/pipeline/stages/imagecheck"
	"github.com/pipeline-dev/pipeline/stages/lossgate"
	"github.com/pipeline-dev/pipeline/stages/params"
	"github.com/pipeline-dev/pipeline/stages/prune"
	"github.com/pipeline-dev/pipeline/stages/train"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "0.1.0-dev"

// registered lists every stage kind: adding a kind is one line here.
var registered = []pipeline.Kind{
	imagecheck.Kind{},
	params.Kind{},
	train.Kind{},
	lossgate.Kind{},
	generate.Kind{},
	prune.Kind{},
}

// kinds is the registry by kind name.
func kinds() map[string]pipeline.Kind {
	m := make(map[string]pipeline.Kind, len(registered))
	for _, k := range registered {
		m[k.Name()] = k
	}
	return m
}

// Exit codes (SPEC), named once: engine.ExitOK … engine.ExitLocked.
const (
	exitOK      = engine.ExitOK
	exitError   = engine.ExitError
	exitRefused = engine.ExitRefused
	exitLocked  = engine.ExitLocked
)

// cliError ends a command with an exit code; a nil err means the reason was already shown
// (diagnostics, stage failures), so main prints nothing more.
type cliError struct {
	code int
	err  error
}

func (e *cliError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit %d", e.code)
	}
	return e.err.Error()
}

// Code implements engine.ExitCoder.
func (e *cliError) Code() int { return e.code }

func (e *cliError) Unwrap() error { return e.err }

func exitWith(code int, err error) error { return &cliError{code: code, err: err} }

// shown ends a command with err's exit code (engine.CodeOf) once its reasons were printed.
func shown(err error) error {
	if err == nil {
		return nil
	}
	return &cliError{code: engine.CodeOf(err)}
}

// flagError ends a command whose flags did not parse: -h printed the usage (exit 0), anything
// else was already reported by the flag package (exit 1).
func flagError(err error) error {
	if errors.Is(err, flag.ErrHelp) {
		return exitWith(exitOK, nil)
	}
	return exitWith(exitError, nil)
}

// cmdIO is what every command reads and writes.
type cmdIO struct {
	stdin          io.Reader
	stdout, stderr io.Writer
}

// command is one subcommand: `pipeline NAME args...`.
type command interface {
	Run(args []string) error
}

// commands builds each subcommand for one run.
var commands = map[string]func(cmdIO) command{
	"validate":     func(io cmdIO) command { return &validateCommand{cmdIO: io} },
	"plan":         func(io cmdIO) command { return &planCommand{cmdIO: io} },
	"apply":        func(io cmdIO) command { return &applyCommand{cmdIO: io} },
	"graph":        func(io cmdIO) command { return &graphCommand{cmdIO: io} },
	"fmt":          func(io cmdIO) command { return &fmtCommand{cmdIO: io} },
	"output":       func(io cmdIO) command { return &outputCommand{cmdIO: io} },
	"state":        func(io cmdIO) command { return &stateCommand{cmdIO: io} },
	"force-unlock": func(io cmdIO) command { return &unlockCommand{cmdIO: io} },
}

const usage = `Usage: pipeline <command> [flags] [FILE...]

Commands:
  validate FILE...        check configuration: syntax, types, references, cycles
  plan FILE...            show what apply would do (runs read-only checks for real)
  apply FILE... | PLAN    run the pipeline, recording state after every stage transition
  graph FILE...           print the stage DAG as Graphviz DOT
  fmt [-check] [-diff] [FILE...]  rewrite files in canonical format (no FILE: *.hcl here)
  output [-json|-raw] [NAME] [FILE]  print root outputs recorded by the last apply (HCL)
  state list|show|rm|pull|push|migrate   inspect, edit or move recorded state
  force-unlock [-force] ID      remove a stale lock left by a dead process
  version                 print the version

Run 'pipeline <command> -h' for a command's flags.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// run executes a command and returns its exit code; tests call it directly.
func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitError
	}
	name, rest := args[0], args[1:]
	switch name {
	case "version", "-version", "--version":
		fmt.Fprintf(stdout, "pipeline %s\n", version)
		return exitOK
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return exitOK
	}
	newCmd, ok := commands[name]
	if !ok {
		fmt.Fprintf(stderr, "pipeline: unknown command %q\n\n%s", name, usage)
		return exitError
	}
	return exitCode(newCmd(cmdIO{stdin: stdin, stdout: stdout, stderr: stderr}).Run(rest), stderr)
}

// exitCode is the one place an error becomes an exit status: its message is printed unless the
// command already showed why.
func exitCode(err error, stderr io.Writer) int {
	if err == nil {
		return exitOK
	}
	var ce *cliError
	if !errors.As(err, &ce) || ce.err != nil {
		fmt.Fprintf(stderr, "Error: %s\n", view.SafeText(err.Error()))
	}
	return engine.CodeOf(err)
}
