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
	"github.com/pipeline-dev/pipeline/stages/generate"
	"github.com/pipeline-dev/pipeline/stages/imagecheck"
	"github.com/pipeline-dev/pipeline/stages/lossgate"
	"github.com/pipeline-dev/pipeline/stages/params"
	"github.com/pipeline-dev/pipeline/stages/prune"
	"github.com/pipeline-dev/pipeline/stages/train"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "0.1.0-dev"

// kinds registers every stage kind: adding a kind is one line here.
func kinds() map[string]pipeline.Kind {
	all := []pipeline.Kind{
		imagecheck.Kind{},
		params.Kind{},
		train.Kind{},
		lossgate.Kind{},
		generate.Kind{},
		prune.Kind{},
	}
	m := make(map[string]pipeline.Kind, len(all))
	for _, k := range all {
		m[k.Name()] = k
	}
	return m
}

// Exit codes (SPEC): 0 ok, 1 error, 2 changes pending (plan -detailed-exitcode), 3 a check
// refused, 4 state locked.
const (
	exitOK      = 0
	exitError   = 1
	exitChanges = 2
	exitRefused = 3
	exitLocked  = 4
)

// exitError carries an exit code; its message (if any) was not printed yet.
type exitErr struct {
	code int
	err  error
}

func (e *exitErr) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit %d", e.code)
	}
	return e.err.Error()
}

func exitWith(code int, err error) error { return &exitErr{code: code, err: err} }

// flagError ends a command whose flags did not parse: -h printed the usage (exit 0), anything
// else was already reported by the flag package (exit 1).
func flagError(err error) error {
	if errors.Is(err, flag.ErrHelp) {
		return exitWith(exitOK, nil)
	}
	return exitWith(exitError, nil)
}

const usage = `Usage: pipeline <command> [flags] [FILE...]

Commands:
  validate FILE...        check configuration: syntax, types, references, cycles
  plan FILE...            show what apply would do (runs read-only checks for real)
  apply FILE... | PLAN    run the pipeline, recording state after every stage transition
  graph FILE...           print the stage DAG as Graphviz DOT
  fmt [-check] FILE...    rewrite files in canonical format
  output [-json] [NAME] [FILE]  print root outputs recorded by the last apply
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
	cmd, rest := args[0], args[1:]
	var err error
	switch cmd {
	case "validate":
		err = runValidate(rest, stdout, stderr)
	case "plan":
		err = runPlan(rest, stdout, stderr)
	case "apply":
		err = runApply(rest, stdin, stdout, stderr)
	case "graph":
		err = runGraph(rest, stdout, stderr)
	case "fmt":
		err = runFmt(rest, stdout, stderr)
	case "output":
		err = runOutput(rest, stdout, stderr)
	case "state":
		err = runState(rest, stdin, stdout, stderr)
	case "force-unlock":
		err = runForceUnlock(rest, stdout, stderr)
	case "version", "-version", "--version":
		fmt.Fprintf(stdout, "pipeline %s\n", version)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
	default:
		fmt.Fprintf(stderr, "pipeline: unknown command %q\n\n%s", cmd, usage)
		return exitError
	}
	if err == nil {
		return exitOK
	}
	var ee *exitErr
	if errors.As(err, &ee) {
		if ee.err != nil {
			fmt.Fprintf(stderr, "Error: %v\n", ee.err)
		}
		return ee.code
	}
	fmt.Fprintf(stderr, "Error: %v\n", err)
	return exitError
}
