package train

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	"github.com/zclconf/go-cty/cty"

	"github.com/pipeline-dev/pipeline/pipeline"
	"github.com/pipeline-dev/pipeline/stages/lib/limits"
)

// The guard holds where the money is spent: whatever expression produced the input (a merge()
// over params' values, a literal, a variable), its final values are held to the research limits,
// to the limits a params stage it reads published, and to this stage's own limit blocks.

// bounds are the limits the input is held to: the built-in ones, under those published by the
// read-only stages the stage reads (a params stage's `limits` output: its limit blocks replace
// the built-ins there too), under this stage's own limit blocks.
func bounds(req *pipeline.Request, cfg *config) limits.Set {
	s := limits.Builtin()
	addrs := make([]string, 0, len(req.Reads))
	for a := range req.Reads {
		addrs = append(addrs, a)
	}
	sort.Strings(addrs)
	for _, addr := range addrs {
		out := req.Reads[addr]
		if out == cty.NilVal || !out.IsKnown() || out.IsNull() || !out.Type().IsObjectType() || !out.Type().HasAttribute("limits") {
			continue
		}
		published, ok := limits.FromValue(out.GetAttr("limits"))
		if !ok {
			continue
		}
		for name, b := range published {
			if b.Source != limits.BuiltIn {
				b.Source += ", published by " + addr
			}
			published[name] = b
		}
		s = s.Over(published)
	}
	return s.Over(cfg.Limits)
}

// checkLimits holds the final input to its bounds. It returns the refusal ("" when every value
// stays inside) and warnings about limit blocks that bound nothing.
func checkLimits(req *pipeline.Request, cfg *config) (refusal string, warnings []string) {
	b := bounds(req, cfg)
	var problems []string
	for _, name := range b.Names() {
		raw, set := cfg.Input[name]
		if !set {
			continue
		}
		v, ok := raw.(float64)
		if !ok {
			problems = append(problems, fmt.Sprintf("input %s = %s is not a number, so its limit (%s) cannot hold it: give a number", name, shown(name, raw), b[name].Source))
			continue
		}
		if esc := b[name].Escape(v); esc != "" {
			problems = append(problems, escapeMessage(req, name, v, esc, b[name]))
		}
	}
	for _, name := range cfg.Limits.Names() {
		if _, set := cfg.Input[name]; !set {
			warnings = append(warnings, fmt.Sprintf("limit %q bounds no value of input: check its name against the input (%s)", name, strings.Join(inputNames(cfg.Input), ", ")))
		}
	}
	if len(problems) == 0 {
		return "", warnings
	}
	return strings.Join(problems, "; ") + ". Nothing was uploaded or started.", warnings
}

// escapeMessage names the value, the limit it escapes and why, where the value came from, and
// how to allow it on purpose.
func escapeMessage(req *pipeline.Request, name string, v float64, esc string, b limits.Bound) string {
	src := b.Source
	if b.Why != "" {
		src += ": " + b.Why
	}
	msg := fmt.Sprintf("input %s = %s %s (%s)", name, limits.Show(v), esc, src)
	if from := origin(req, name, v); from != "" {
		msg += "; it comes from " + from
	}
	how := "in this train stage"
	if strings.HasPrefix(b.Source, "limit ") && !strings.Contains(b.Source, "published by") {
		how = "by changing that block"
	}
	return msg + fmt.Sprintf("; if you mean it, raise the limit on purpose %s: %s", how, b.Raise(name, v))
}

func inputNames(in map[string]any) []string {
	names := make([]string, 0, len(in))
	for k := range in {
		names = append(names, k)
	}
	sort.Strings(names)
	return names
}

// shown renders an input value for a message (secrets as "(sensitive)").
func shown(name string, v any) string {
	if isSecret(name) {
		return "(sensitive)"
	}
	b, _ := json.Marshal(v)
	return string(b)
}
