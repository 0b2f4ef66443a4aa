package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"
	"golang.org/x/term"

	"github.com/pipeline-dev/pipeline/pipeline"
	"github.com/pipeline-dev/pipeline/pipeline/engine"
	"github.com/pipeline-dev/pipeline/pipeline/lang"
	"github.com/pipeline-dev/pipeline/pipeline/state"
	"github.com/pipeline-dev/pipeline/pipeline/view"
	"github.com/pipeline-dev/pipeline/stages/lib/replicate/replicatetest"
)

// multiFlag is a repeatable string flag.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

// common holds the flags shared by plan and apply (Terraform style, single dash).
type common struct {
	vars        multiFlag
	varFiles    multiFlag
	statePath   string
	json        bool
	noColor     bool
	parallelism int
	only        multiFlag
	shard       string
	replace     multiFlag
	lockTimeout time.Duration
	simulate    bool
	details     bool
	maxInFlight int
	refresh     bool
}

func (c *common) register(fs *flag.FlagSet, withRun bool) {
	fs.Var(&c.vars, "var", "set a variable: -var NAME=VALUE (repeatable; non-strings are HCL expressions)")
	fs.Var(&c.varFiles, "var-file", "load variable values from an HCL file (repeatable)")
	fs.StringVar(&c.statePath, "state", "", "state location: a path or a URL (s3://, gs://, azblob://, file:///dir, mem://)")
	fs.BoolVar(&c.json, "json", false, "line-delimited JSON events on stdout (human text goes to stderr)")
	fs.BoolVar(&c.noColor, "no-color", false, "disable colour (also NO_COLOR, and whenever output is not a terminal)")
	if withRun {
		fs.IntVar(&c.parallelism, "parallelism", 4, "stage instances run at once")
		fs.Var(&c.only, "only", "batch: run only this instance key (repeatable)")
		fs.StringVar(&c.shard, "shard", "", "batch: run only shard I of N (I/N, 1-based), a stable hash partition of keys")
		fs.Var(&c.replace, "replace", "re-run this stage instance although nothing changed (repeatable)")
		fs.DurationVar(&c.lockTimeout, "lock-timeout", 0, "wait this long for a state lock (e.g. 30s)")
		fs.BoolVar(&c.simulate, "simulate", false, "run against the built-in offline Replicate simulator (labelled [simulated])")
		fs.BoolVar(&c.details, "details", false, "print every instance of a large batch, not per-stage summaries")
		fs.IntVar(&c.maxInFlight, "max-in-flight", 100, "apply: paid remote jobs followed at once (they hold no -parallelism slot)")
		fs.BoolVar(&c.refresh, "refresh", true, "read Replicate while planning; -refresh=false plans from state alone (apply still reconciles before creating anything)")
	}
}

// ui holds the views of one command: human text (stdout, or stderr under -json) and -json.
type ui struct {
	human  *view.Human
	diag   *view.Human // diagnostics always go to stderr
	json   *view.JSON
	stdout io.Writer
	stderr io.Writer
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

func ciMode() bool { return os.Getenv("CI") == "true" || os.Getenv("CI") == "1" }

func newUI(c *common, stdout, stderr io.Writer) *ui {
	u := &ui{stdout: stdout, stderr: stderr}
	out := stdout
	if c.json {
		u.json = view.NewJSON(stdout)
		out = stderr
	}
	tty := isTerminal(out)
	_, noColorEnv := os.LookupEnv("NO_COLOR")
	u.human = view.NewHuman(out, view.Options{
		Color:   tty && !noColorEnv && !c.noColor && os.Getenv("TERM") != "dumb",
		Redraw:  tty && !ciMode(),
		CI:      ciMode(),
		Details: c.details,
	})
	u.diag = view.NewHuman(stderr, view.Options{
		Color: isTerminal(stderr) && !noColorEnv && !c.noColor && os.Getenv("TERM") != "dumb",
		CI:    ciMode(),
	})
	return u
}

// Emit implements pipeline.Sink: -json gets every event; human text skips what JSON covers.
func (u *ui) Emit(e pipeline.Event) {
	if u.json != nil {
		u.json.Emit(e)
		// Under -json the human view (stderr) keeps only failures, warnings and diagnostics.
		switch e.Type {
		case pipeline.EventStageFailed, pipeline.EventStageWarning, pipeline.EventDiagnostic:
		default:
			return
		}
	}
	u.human.Emit(e)
}

func (u *ui) diagnostics(files map[string]*hcl.File, diags hcl.Diagnostics) {
	if len(diags) == 0 {
		return
	}
	u.diag.SetFiles(files)
	if u.json != nil {
		u.json.Diagnostics(diags)
	}
	u.diag.Diagnostics(diags)
}

// jsonErrors makes a command's final error a -json diagnostic event too, so a machine reading
// stdout learns why the run stopped (a lock, a refused confirmation, a bad flag), not only stderr.
func (u *ui) jsonErrors(err error) error {
	var ee *cliError
	if u == nil || u.json == nil || err == nil || !errors.As(err, &ee) || ee.err == nil {
		return err
	}
	u.json.Emit(pipeline.Event{Type: pipeline.EventDiagnostic, Diagnostic: &hcl.Diagnostic{Severity: hcl.DiagError, Summary: ee.err.Error()}})
	return err
}

func (u *ui) log(format string, args ...any) {
	u.Emit(pipeline.Event{Type: pipeline.EventLog, Message: fmt.Sprintf(format, args...)})
}

// loaded is a configuration ready to plan.
type loaded struct {
	files  []string
	mod    *lang.Module
	vars   map[string]cty.Value
	store  state.Store
	env    *pipeline.Env
	sim    *replicatetest.Server
	engine *engine.Engine
}

func (l *loaded) close() {
	if l.store != nil {
		l.store.Close()
	}
	if l.sim != nil {
		l.sim.Close()
	}
}

func loadModule(u *ui, files []string) (*lang.Module, error) {
	if len(files) == 0 {
		return nil, exitWith(exitError, errors.New("no configuration file given: pipeline <command> [flags] FILE.hcl"))
	}
	mod, diags := lang.Load(files, kinds())
	files0 := map[string]*hcl.File{}
	if mod != nil {
		files0 = mod.Files()
	}
	u.diagnostics(files0, diags)
	if diags.HasErrors() || mod == nil {
		return nil, exitWith(exitError, nil)
	}
	return mod, nil
}

// load parses the config, resolves variables, opens state and builds the engine.
func load(ctx context.Context, c *common, u *ui, files []string, savedVars map[string]cty.Value) (*loaded, error) {
	mod, err := loadModule(u, files)
	if err != nil {
		return nil, err
	}
	vars, diags := mod.Variables(lang.VarInputs{Environ: os.Environ(), VarFiles: c.varFiles, Vars: c.vars, AllowUnset: savedVars != nil})
	if savedVars != nil {
		// A saved plan's values win; sensitive ones were not saved and come from env/-var again.
		var keep hcl.Diagnostics
		for _, d := range diags {
			if d.Severity == hcl.DiagError && strings.Contains(d.Summary, "No value for required variable") {
				continue
			}
			keep = append(keep, d)
		}
		diags = keep
		for k, v := range savedVars {
			vars[k] = v
		}
		for k, v := range vars {
			if !v.IsWhollyKnown() {
				return nil, exitWith(exitError, fmt.Errorf("variable %q is sensitive and was not saved in the plan: set it again with -var or PIPELINE_VAR_%s", k, k))
			}
		}
	}
	u.diagnostics(mod.Files(), diags)
	if diags.HasErrors() {
		return nil, exitWith(exitError, nil)
	}
	l := &loaded{files: files, mod: mod, vars: vars}
	location := c.statePath
	if location == "" {
		scope, diags := mod.NewScope(lang.Instance{Vars: vars})
		if diags.HasErrors() {
			u.diagnostics(mod.Files(), diags)
			return nil, exitWith(exitError, nil)
		}
		url, diags := scope.EvalStateURL()
		u.diagnostics(mod.Files(), diags)
		if diags.HasErrors() {
			return nil, exitWith(exitError, nil)
		}
		location = url
	}
	store, err := state.OpenWith(ctx, location, files[0], state.OpenOptions{Batch: mod.HasBatch()})
	if err != nil {
		return nil, exitWith(exitError, fmt.Errorf("opening state: %w", err))
	}
	l.store = store
	// Figures go where the state is (every CI runner of a remote state shares them); photos and
	// prepared copies stay in the local cache directory.
	l.env = &pipeline.Env{Getenv: os.Getenv, CacheDir: cacheDir(location, files[0]),
		Cache: state.CacheOf(store), Values: map[any]any{}, NoRefresh: !c.refresh}
	if c.simulate {
		world := filepath.Join(filepath.Dir(cacheDir(location, files[0])), stem(files[0])+".simulator.json")
		sim, err := replicatetest.Simulate(world)
		if err != nil {
			l.close()
			return nil, exitWith(exitError, fmt.Errorf("starting the simulator: %w", err))
		}
		l.sim = sim
		l.env.Simulated = true
		l.env.Getenv = func(k string) string {
			switch k {
			case "REPLICATE_BASE_URL":
				return sim.URL()
			case "REPLICATE_API_TOKEN":
				return sim.Token()
			}
			return os.Getenv(k)
		}
		u.log("[simulated] Using the built-in offline Replicate simulator at %s (world: %s). Nothing is sent to Replicate; every remote result below is simulated.", sim.URL(), world)
	}
	if c.parallelism < 1 {
		l.close()
		return nil, exitWith(exitError, fmt.Errorf("-parallelism %d: must be at least 1", c.parallelism))
	}
	if c.maxInFlight < 1 {
		l.close()
		return nil, exitWith(exitError, fmt.Errorf("-max-in-flight %d: must be at least 1", c.maxInFlight))
	}
	shard := engine.Shard{}
	if c.shard != "" {
		s, err := engine.ParseShard(c.shard)
		if err != nil {
			l.close()
			return nil, exitWith(exitError, err)
		}
		shard = s
		l.env.Shards = s.Count // the shards of a batch run at once, on one account's rate limits
	}
	l.engine = &engine.Engine{
		Module: mod, Vars: vars, Store: store, Sink: u, Env: l.env,
		Parallelism: c.parallelism, MaxInFlight: c.maxInFlight, Only: c.only, Shard: shard, Replace: c.replace, LockTimeout: c.lockTimeout,
	}
	return l, nil
}

func stem(configPath string) string {
	base := filepath.Base(configPath)
	return strings.TrimSuffix(base, filepath.Ext(base))
}

// cacheDir is where stages keep caches: beside a local state file, else beside the config.
func cacheDir(location, configPath string) string {
	if location == "" || !strings.Contains(location, "://") {
		p := location
		if p == "" {
			p = state.DefaultPath(configPath)
		}
		return filepath.Join(filepath.Dir(p), "cache")
	}
	return filepath.Join(filepath.Dir(configPath), ".pipeline", "cache")
}

// remoteWithoutToken names remote stages when no token is set and -simulate is off.
func remoteWithoutToken(l *loaded) []string {
	if l.env.Simulated || os.Getenv("REPLICATE_API_TOKEN") != "" {
		return nil
	}
	var out []string
	for _, st := range l.mod.Stages() {
		if st.Schema.Remote {
			out = append(out, st.Addr)
		}
	}
	return out
}

func lockedExit(err error) error {
	var le *state.LockedError
	if errors.As(err, &le) {
		return exitWith(exitLocked, err)
	}
	return nil
}
