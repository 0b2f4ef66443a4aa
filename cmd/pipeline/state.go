package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/pipeline-dev/pipeline/pipeline"
	"github.com/pipeline-dev/pipeline/pipeline/engine"
	"github.com/pipeline-dev/pipeline/pipeline/lang"
	"github.com/pipeline-dev/pipeline/pipeline/state"
)

const stateUsage = `Usage: pipeline state <subcommand> [flags] ...

  list [FILE]              list recorded stage instances
  show [-json] ADDR [FILE] show one record (status, digest, outputs, remote ids)
  rm ADDR [FILE]           forget a recorded stage instance (it runs again next apply)
  pull [FILE]              print the whole state as JSON
  push [-force] STATEFILE [FILE]  write a pulled state (or a local .state.json) into the state
  migrate -to URL [FILE]   copy the whole state, in-flight trainings included, to another location

FILE is the pipeline config whose state to use (default location beside it); -state PATH|URL picks
the state directly.
`

// stateCommand is `pipeline state SUBCOMMAND ...`.
type stateCommand struct{ cmdIO }

// Run implements command.
func (sc *stateCommand) Run(args []string) error {
	stdout, stderr := sc.stdout, sc.stderr
	if len(args) == 0 {
		fmt.Fprint(stderr, stateUsage)
		return exitWith(exitError, nil)
	}
	sub, rest := args[0], args[1:]
	if sub == "-h" || sub == "-help" || sub == "--help" || sub == "help" {
		fmt.Fprint(stdout, stateUsage)
		return nil
	}
	fs := flag.NewFlagSet("state "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	statePath := fs.String("state", "", "state location: a path or a URL")
	asJSON := fs.Bool("json", false, "print JSON")
	lockTimeout := fs.Duration("lock-timeout", 0, "wait this long for the state lock")
	force := fs.Bool("force", false, "push: replace instances of another lineage or with a newer serial")
	to := fs.String("to", "", "migrate: the state location to copy to (a URL such as s3://bucket/prefix)")
	fs.Usage = func() { fmt.Fprint(stderr, stateUsage); fs.PrintDefaults() }
	if err := fs.Parse(rest); err != nil {
		return flagError(err)
	}
	pos := fs.Args()
	ctx := context.Background()
	open := func(config string) (state.Store, error) {
		if *statePath == "" && config == "" {
			return nil, exitWith(exitError, errors.New("which state? give the config FILE or -state PATH"))
		}
		if err := configExists(config); err != nil {
			return nil, err
		}
		if *statePath == "" && config != "" {
			if url := stateURLFromConfig(config); url != "" {
				return state.Open(ctx, url, config)
			}
		}
		return state.Open(ctx, *statePath, config)
	}
	arg := func(i int) string {
		if i < len(pos) {
			return pos[i]
		}
		return ""
	}
	switch sub {
	case "list":
		st, err := open(arg(0))
		if err != nil {
			return exitWith(exitError, err)
		}
		defer st.Close()
		noteEmptyRemote(ctx, st, *statePath, arg(0), stderr)
		return stateList(ctx, st, stdout)
	case "show":
		if len(pos) < 1 {
			return exitWith(exitError, errors.New("usage: pipeline state show [-json] ADDR [FILE]"))
		}
		st, err := open(arg(1))
		if err != nil {
			return exitWith(exitError, err)
		}
		defer st.Close()
		return stateShow(ctx, st, pos[0], *asJSON, stdout)
	case "rm":
		if len(pos) < 1 {
			return exitWith(exitError, errors.New("usage: pipeline state rm ADDR [FILE]"))
		}
		st, err := open(arg(1))
		if err != nil {
			return exitWith(exitError, err)
		}
		defer st.Close()
		return stateRm(ctx, st, pos[0], *lockTimeout, stdout)
	case "pull":
		st, err := open(arg(0))
		if err != nil {
			return exitWith(exitError, err)
		}
		defer st.Close()
		noteEmptyRemote(ctx, st, *statePath, arg(0), stderr)
		return statePull(ctx, st, stdout)
	case "push":
		if len(pos) < 1 {
			return exitWith(exitError, errors.New("usage: pipeline state push [-force] STATEFILE [FILE]"))
		}
		st, err := open(arg(1))
		if err != nil {
			return exitWith(exitError, err)
		}
		defer st.Close()
		return statePush(ctx, st, pos[0], *force, *lockTimeout, stdout)
	case "migrate":
		if *to == "" {
			return exitWith(exitError, errors.New("usage: pipeline state migrate -to URL [-state FROM] [FILE]"))
		}
		st, err := open(arg(0))
		if err != nil {
			return exitWith(exitError, err)
		}
		defer st.Close()
		return stateMigrate(ctx, st, *to, arg(0), *lockTimeout, stdout)
	}
	fmt.Fprint(stderr, stateUsage)
	return exitWith(exitError, fmt.Errorf("unknown state subcommand %q", sub))
}

// stateURLFromConfig reads a `state { url = ... }` block when the config has one and it needs no
// variables; errors are left to plan/apply, which report them with source ranges.
func stateURLFromConfig(config string) string {
	mod, diags := lang.Load([]string{config}, kinds())
	if diags.HasErrors() || mod == nil {
		return ""
	}
	vars, d := mod.Variables(lang.VarInputs{Environ: os.Environ(), AllowUnset: true})
	if d.HasErrors() {
		return ""
	}
	scope, d := mod.NewScope(lang.Instance{Vars: vars})
	if d.HasErrors() {
		return ""
	}
	url, d := scope.EvalStateURL()
	if d.HasErrors() {
		return ""
	}
	return url
}

// configExists refuses a config FILE argument that names nothing: reading the state of a config
// that is not there would print an empty state and look like success.
func configExists(config string) error {
	if config == "" {
		return nil
	}
	if _, err := os.Stat(config); err != nil {
		return exitWith(exitError, fmt.Errorf("%s: no such config file (give the pipeline's .hcl file, or -state PATH)", config))
	}
	return nil
}

// noteEmptyRemote explains an empty remote state read without a config: a config's state lives
// under <url>/<config stem>/, so the URL alone names the bucket prefix, not the state.
func noteEmptyRemote(ctx context.Context, st state.Store, location, config string, stderr io.Writer) {
	if config != "" || !state.IsURL(location) {
		return
	}
	if keys, err := st.Keys(ctx); err == nil && len(keys) == 0 {
		fmt.Fprintf(stderr, "note: no state under %s. A config's state lives under %s/<config stem>/: pass the config FILE too, or add the stem to the URL.\n", location, strings.TrimRight(location, "/"))
	}
}

// parseAddr splits KIND.NAME["key"] into the stage address and key.
func parseAddr(addr string) (stage, key string, err error) {
	stage = addr
	if i := strings.Index(addr, "["); i >= 0 {
		if !strings.HasSuffix(addr, "]") {
			return "", "", fmt.Errorf("invalid address %q: want KIND.NAME or KIND.NAME[\"key\"]", addr)
		}
		k, err := strconv.Unquote(addr[i+1 : len(addr)-1])
		if err != nil {
			return "", "", fmt.Errorf("invalid address %q: the key must be quoted, e.g. train.lora[\"ana\"]", addr)
		}
		stage, key = addr[:i], k
	}
	if strings.Count(stage, ".") != 1 {
		return "", "", fmt.Errorf("invalid address %q: want KIND.NAME or KIND.NAME[\"key\"]", addr)
	}
	return stage, key, nil
}

func stateList(ctx context.Context, st state.Store, stdout io.Writer) error {
	keys, err := st.Keys(ctx)
	if err != nil {
		return exitWith(exitError, err)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	for _, k := range keys {
		inst, err := st.Get(ctx, k)
		if err != nil {
			return exitWith(exitError, err)
		}
		if inst == nil {
			continue
		}
		addrs := make([]string, 0, len(inst.Records))
		for a := range inst.Records {
			addrs = append(addrs, a)
		}
		sort.Strings(addrs)
		for _, a := range addrs {
			r := inst.Records[a]
			fmt.Fprintf(tw, "%s\t%s\t%s\n", engine.Address(a, k, k != ""), r.Status, r.UpdatedAt.Format(time.RFC3339))
		}
	}
	return tw.Flush()
}

func findRecord(ctx context.Context, st state.Store, addr string) (*state.Instance, string, error) {
	stage, key, err := parseAddr(addr)
	if err != nil {
		return nil, "", exitWith(exitError, err)
	}
	inst, err := st.Get(ctx, key)
	if err != nil {
		return nil, "", exitWith(exitError, err)
	}
	if inst == nil || inst.Records[stage] == nil {
		hint := "see `pipeline state list`"
		if s := suggestAddr(ctx, st, stage, key); s != "" {
			hint = "did you mean " + s + "? (or state list)"
		}
		return nil, "", exitWith(exitError, fmt.Errorf("no record for %s in %s: %s", addr, st.Describe(), hint))
	}
	return inst, stage, nil
}

// suggestAddr is the recorded address closest to what was asked: in a batch, `train.lora` means
// one of its instances (the first key that has it), a mistyped key or stage the nearest one.
func suggestAddr(ctx context.Context, st state.Store, stage, key string) string {
	keys, err := st.Keys(ctx)
	if err != nil {
		return ""
	}
	var addrs, withStage []string
	for _, k := range keys {
		inst, err := st.Get(ctx, k)
		if err != nil || inst == nil {
			continue
		}
		for a := range inst.Records {
			full := engine.Address(a, k, k != "")
			addrs = append(addrs, full)
			if a == stage {
				withStage = append(withStage, full)
			}
		}
	}
	sort.Strings(withStage)
	if key == "" && len(withStage) > 0 {
		return withStage[0]
	}
	return pipeline.Suggest(engine.Address(stage, key, key != ""), addrs)
}

func stateShow(ctx context.Context, st state.Store, addr string, asJSON bool, stdout io.Writer) error {
	inst, stage, err := findRecord(ctx, st, addr)
	if err != nil {
		return err
	}
	r := inst.Records[stage]
	if asJSON {
		b, _ := json.MarshalIndent(map[string]any{"address": addr, "record": r, "serial": inst.Serial, "lineage": inst.Lineage}, "", "  ")
		fmt.Fprintln(stdout, string(b))
		return nil
	}
	fmt.Fprintf(stdout, "# %s\nstatus       = %s\ninput_digest = %s\nstarted_at   = %s\nupdated_at   = %s\n", addr, r.Status, r.InputDigest,
		r.StartedAt.Format(time.RFC3339), r.UpdatedAt.Format(time.RFC3339))
	if r.Error != "" {
		fmt.Fprintf(stdout, "error        = %s\n", r.Error)
	}
	for _, w := range r.Warnings {
		fmt.Fprintf(stdout, "warning      = %s\n", w)
	}
	if len(r.Outputs) > 0 {
		fmt.Fprintf(stdout, "outputs      = %s\n", compactValue(r.Outputs))
	}
	if len(r.Data) > 0 {
		fmt.Fprintf(stdout, "data         = %s\n", string(r.Data))
	}
	return nil
}

// compactValue shows the value part of a typed ctyjson document.
func compactValue(raw json.RawMessage) string {
	var doc struct {
		Value json.RawMessage `json:"value"`
	}
	if json.Unmarshal(raw, &doc) == nil && len(doc.Value) > 0 {
		return string(doc.Value)
	}
	return string(raw)
}

func stateRm(ctx context.Context, st state.Store, addr string, timeout time.Duration, stdout io.Writer) error {
	stage, key, err := parseAddr(addr)
	if err != nil {
		return exitWith(exitError, err)
	}
	lock, err := st.Lock(ctx, key, cliLockInfo("state rm"), timeout)
	if err != nil {
		return exitWith(exitError, err)
	}
	defer lock.Unlock()
	inst, _, err := findRecord(ctx, st, addr)
	if err != nil {
		return err
	}
	delete(inst.Records, stage)
	if err := st.Put(ctx, key, inst); err != nil {
		return exitWith(exitError, err)
	}
	fmt.Fprintf(stdout, "Removed %s from state. The next apply runs it again.\n", addr)
	return nil
}

func statePull(ctx context.Context, st state.Store, stdout io.Writer) error {
	snap, err := state.Pull(ctx, st)
	if err != nil {
		return exitWith(exitError, err)
	}
	b, err := state.MarshalSnapshot(snap)
	if err != nil {
		return exitWith(exitError, err)
	}
	fmt.Fprintln(stdout, strings.TrimRight(string(b), "\n"))
	return nil
}

// statePush writes a snapshot (pull output or a local .state.json) into the store, refusing to
// replace another lineage or a newer serial unless -force.
func statePush(ctx context.Context, st state.Store, file string, force bool, timeout time.Duration, stdout io.Writer) error {
	b, err := os.ReadFile(file)
	if err != nil {
		return exitWith(exitError, err)
	}
	snap, err := state.ParseSnapshot(b, file)
	if err != nil {
		return exitWith(exitError, err)
	}
	written, err := state.Push(ctx, st, snap, state.PushOptions{Force: force, Info: cliLockInfo("state push"), LockTimeout: timeout})
	if err != nil {
		return exitWith(exitError, fmt.Errorf("%w\n(%d instance(s) were pushed before this one)", err, len(written)))
	}
	fmt.Fprintf(stdout, "Pushed %d instance(s) to %s.\n", len(written), st.Describe())
	return nil
}

// stateMigrate copies the whole state, in-flight records included, to another location under
// both sides' locks.
func stateMigrate(ctx context.Context, from state.Store, to string, config string, timeout time.Duration, stdout io.Writer) error {
	dst, err := state.Open(ctx, to, config)
	if err != nil {
		return exitWith(exitError, fmt.Errorf("opening %s: %w", to, err))
	}
	defer dst.Close()
	if err := state.MigrateWith(ctx, from, dst, cliLockInfo("state migrate"), timeout); err != nil {
		return exitWith(exitError, err)
	}
	fmt.Fprintf(stdout, "Copied the state of %s to %s. Use -state %s (or a state { url } block) from now on; the old state was left as it was.\n", from.Describe(), dst.Describe(), to)
	return nil
}

func cliLockInfo(op string) state.LockInfo { return state.NewLockInfo(op) }
