package engine

import (
	"sync"

	"github.com/zclconf/go-cty/cty"

	"github.com/pipeline-dev/pipeline/pipeline"
	"github.com/pipeline-dev/pipeline/pipeline/lang"
)

// resourceCounts is, for every resource stages of the batch name (pipeline.ResourceUser), how many
// batch instances of the whole config — every shard — name it. A model that 1,000 subjects
// share is then known to each of them.
type resourceCounts struct {
	count  map[string]int
	once   *sync.Once
	shared map[string]int
}

// collectResources evaluates, for every batch key, the inputs of stages whose kind is a
// ResourceUser (with every stage output unknown: only config values decide a resource).
func (e *Engine) collectResources() resourceCounts {
	rc := resourceCounts{count: map[string]int{}, once: &sync.Once{}}
	var users []*lang.Stage
	for _, st := range e.Module.Stages() {
		if _, ok := st.Impl.(pipeline.ResourceUser); ok {
			users = append(users, st)
		}
	}
	if len(users) == 0 || !e.Module.HasBatch() {
		return rc
	}
	keys, values, diags := e.Module.BatchKeys(e.Vars)
	if diags.HasErrors() {
		return rc
	}
	for _, k := range keys {
		scope, diags := e.Module.NewScope(lang.Instance{Key: k, Batch: true, Value: values[k], Vars: e.Vars})
		if diags.HasErrors() {
			continue
		}
		seen := map[string]bool{}
		for _, st := range users {
			for _, r := range resourcesOf(scope, st, k) {
				if !seen[r] {
					seen[r] = true
					rc.count[r]++
				}
			}
		}
	}
	return rc
}

func resourcesOf(scope *lang.Scope, st *lang.Stage, key string) []string {
	in, blocks, _, diags := scope.EvalStage(st)
	if diags.HasErrors() {
		return nil
	}
	settings := map[string]cty.Value{}
	for _, name := range st.Schema.Settings {
		if v, d := scope.EvalSettings(name); !d.HasErrors() {
			settings[name] = v
		}
	}
	req := &pipeline.Request{Kind: st.Kind, Name: st.Name, Key: key, Inputs: in, Blocks: blocks, Settings: settings,
		BaseDir: st.Config.BaseDir, Schema: st.Schema, Planning: true}
	return st.Impl.(pipeline.ResourceUser).Resources(req)
}

// shared is Request.Shared: the resources that more than one instance of the batch names,
// with how many do (computed once; every request shares the one read-only map).
func (e *Engine) shared() map[string]int {
	if e.resources.once == nil {
		return nil // not planned yet
	}
	e.resources.once.Do(func() {
		for r, n := range e.resources.count {
			if n > 1 {
				if e.resources.shared == nil {
					e.resources.shared = map[string]int{}
				}
				e.resources.shared[r] = n
			}
		}
	})
	return e.resources.shared
}
