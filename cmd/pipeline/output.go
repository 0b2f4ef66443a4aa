package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/pipeline-dev/pipeline/pipeline/state"
	"github.com/pipeline-dev/pipeline/pipeline/view"
)

// outputCommand is `pipeline output [-json|-raw] [NAME] [FILE]`: values in HCL, as apply prints
// them; -json for machines; -raw a string as is, for scripts.
type outputCommand struct{ cmdIO }

// Run implements command.
func (oc *outputCommand) Run(args []string) error {
	stdout, stderr := oc.stdout, oc.stderr
	fs := flag.NewFlagSet("output", flag.ContinueOnError)
	fs.SetOutput(stderr)
	asJSON := fs.Bool("json", false, "print JSON")
	raw := fs.Bool("raw", false, "print NAME's value as is (a string without quotes), for scripts")
	statePath := fs.String("state", "", "state location: a path or a URL")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: pipeline output [-json|-raw] [-state PATH] [NAME] [FILE]\n\nPrints the root outputs the last apply recorded (per batch key in a batch), in HCL as apply prints them.")
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
		return exitWith(exitError, errors.New("usage: pipeline output [-json|-raw] [-state PATH] [NAME] [FILE]"))
	case len(args) == 1:
		name = args[0]
	case *raw:
		return exitWith(exitError, errors.New("-raw prints one output: pipeline output -raw NAME [FILE]"))
	}
	if *raw && *asJSON {
		return exitWith(exitError, errors.New("-raw and -json do not go together: pick one"))
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
		dec := json.NewDecoder(bytes.NewReader(inst.Outputs))
		dec.UseNumber() // 1e-4 prints as written, not as a float's rounding
		if err := dec.Decode(&doc); err != nil {
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
		switch {
		case *raw:
			return printRaw(stdout, name, v, batch)
		case *asJSON:
			b, _ := json.MarshalIndent(v, "", "  ")
			fmt.Fprintln(stdout, string(b))
		default:
			fmt.Fprintln(stdout, view.FormatValue(v))
		}
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
		fmt.Fprintf(stdout, "%s = %s\n", n, view.FormatValue(all[n]))
	}
	return nil
}

// printRaw writes a string, number or bool as is, with no newline (Terraform's -raw), so
// `$(pipeline output -raw version)` is the value itself.
func printRaw(stdout io.Writer, name string, v any, batch bool) error {
	switch t := v.(type) {
	case string:
		fmt.Fprint(stdout, t)
	case json.Number, bool:
		fmt.Fprint(stdout, t)
	default:
		hint := ""
		if batch {
			hint = " (a batch records one value per key)"
		}
		return exitWith(exitError, fmt.Errorf("output %q is not a string, number or bool%s: -raw prints only those; use -json", name, hint))
	}
	return nil
}
