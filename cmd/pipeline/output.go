package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"sort"
	"strings"

	"github.com/pipeline-dev/pipeline/pipeline/state"
)

// outputCommand is `pipeline output [-json] [NAME] [FILE]`.
type outputCommand struct{ cmdIO }

// Run implements command.
func (oc *outputCommand) Run(args []string) error {
	stdout, stderr := oc.stdout, oc.stderr
	fs := flag.NewFlagSet("output", flag.ContinueOnError)
	fs.SetOutput(stderr)
	asJSON := fs.Bool("json", false, "print JSON")
	statePath := fs.String("state", "", "state location: a path or a URL")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: pipeline output [-json] [-state PATH] [NAME] [FILE]\n\nPrints the root outputs the last apply recorded (per batch key in a batch).")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return flagError(err)
	}
	// Arguments: [NAME] [FILE]. The config FILE is needed unless -state names the state.
	var name, config string
	args = fs.Args()
	if n := len(args); n > 0 && (strings.HasSuffix(args[n-1], ".hcl") || *statePath == "") {
		config, args = args[n-1], args[:n-1]
	}
	switch {
	case len(args) > 1, config == "" && *statePath == "":
		return exitWith(exitError, errors.New("usage: pipeline output [-json] [-state PATH] [NAME] [FILE]"))
	case len(args) == 1:
		name = args[0]
	}
	if err := configExists(config); err != nil {
		return err
	}
	location := *statePath
	if location == "" {
		location = stateURLFromConfig(config)
	}
	ctx := context.Background()
	st, err := state.Open(ctx, location, config)
	if err != nil {
		return exitWith(exitError, err)
	}
	defer st.Close()
	keys, err := st.Keys(ctx)
	if err != nil {
		return exitWith(exitError, err)
	}
	all := map[string]any{}
	batch := len(keys) > 1 || (len(keys) == 1 && keys[0] != "")
	for _, k := range keys {
		inst, err := st.Get(ctx, k)
		if err != nil {
			return exitWith(exitError, err)
		}
		if inst == nil || len(inst.Outputs) == 0 {
			continue
		}
		var doc struct {
			Value map[string]any `json:"value"`
		}
		if err := json.Unmarshal(inst.Outputs, &doc); err != nil {
			continue
		}
		for n, v := range doc.Value {
			if !batch {
				all[n] = v
				continue
			}
			m, _ := all[n].(map[string]any)
			if m == nil {
				m = map[string]any{}
				all[n] = m
			}
			m[k] = v
		}
	}
	if name != "" {
		v, ok := all[name]
		if !ok {
			return exitWith(exitError, fmt.Errorf("output %q not found: apply records outputs after a run", name))
		}
		if s, ok := v.(string); ok && !*asJSON {
			fmt.Fprintln(stdout, s)
			return nil
		}
		b, _ := json.MarshalIndent(v, "", "  ")
		fmt.Fprintln(stdout, string(b))
		return nil
	}
	if *asJSON {
		b, _ := json.MarshalIndent(all, "", "  ")
		fmt.Fprintln(stdout, string(b))
		return nil
	}
	names := make([]string, 0, len(all))
	for n := range all {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		b, _ := json.Marshal(all[n])
		fmt.Fprintf(stdout, "%s = %s\n", n, b)
	}
	return nil
}
