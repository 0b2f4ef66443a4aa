package train

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"
	"time"

	"github.com/zclconf/go-cty/cty"
	ctyjson "github.com/zclconf/go-cty/cty/json"

	"github.com/pipeline-dev/pipeline/pipeline"
	"github.com/pipeline-dev/pipeline/stages/lib/limits"
	"github.com/pipeline-dev/pipeline/stages/lib/photo"
	"github.com/pipeline-dev/pipeline/stages/lib/replicate"
)

// defaultHardware is what a destination model is created on when `replicate { hardware }` is unset.
const defaultHardware = "gpu-t4"

// minPoll is the shortest poll_interval accepted: anything faster only spends API rate limit on a
// training that takes tens of minutes. Tests lower it for their step-per-GET test server.
var minPoll = time.Second

// simulatedPoll is the first polling interval under -simulate, so the offline example is quick.
const simulatedPoll = 150 * time.Millisecond

// config is a train stage's evaluated settings. Fields whose value is not known yet (plan) stay empty
// with the matching *Known flag false.
type config struct {
	Trainer        string // owner/name:version
	TrainerVersion string // the version id
	Destination    string // owner/name
	DestOwner      string
	DestName       string
	Hardware       string

	Images      []imageFile
	ImagesKnown bool
	// MaxSide is the long side of the prepared copies the zip holds (max_side).
	MaxSide int

	// Settings is the replicate block (money: training_hardware, prices, max_cost_usd).
	Settings replicate.Settings
	// Limits are the stage's own limit blocks (nil while one is not known yet).
	Limits       limits.Set
	LimitsKnown  bool
	unknownLimit string

	// Input is the trainer input as configured (input_images excluded), secrets included.
	Input      map[string]any
	InputKnown bool

	Poll replicate.Poller
}

// isSecret reports whether an input name holds a credential (hf_token, wandb_api_key, ...): such
// values go to the trainer but never into outputs, state, notes or messages.
func isSecret(name string) bool {
	n := strings.ToLower(name)
	return strings.Contains(n, "token") || strings.Contains(n, "key") || strings.Contains(n, "secret")
}

// attrs are the stage's attributes as the schema decodes them.
type attrs struct {
	Images      []string      `cty:"images"`
	Trainer     string        `cty:"trainer"`
	Destination string        `cty:"destination"`
	Input       cty.Value     `cty:"input"`
	Poll        time.Duration `cty:"poll_interval"`
	MaxSide     int           `cty:"max_side"`
}

// checkPoll is poll_interval's floor (minPoll, which tests lower for the step-per-GET server).
func checkPoll(v, _ cty.Value) error {
	d, err := time.ParseDuration(strings.TrimSpace(v.AsString()))
	if err == nil && d < minPoll {
		return fmt.Errorf("poll_interval %s is below %s: a training takes minutes, faster polling only spends the API's rate limit", d, minPoll)
	}
	return nil
}

// parseConfig decodes the stage's inputs and the replicate block. Unknown values (plan) are left
// unknown, with the matching *Known flag false.
func parseConfig(req *pipeline.Request) (*config, error) {
	var a attrs
	var set replicate.Settings
	diags := schema.Decode(req, &a)
	diags = append(diags, schema.DecodeSettings(req, "replicate", &set)...)
	c := &config{Hardware: set.Hardware, Settings: set, MaxSide: a.MaxSide}
	if c.MaxSide <= 0 {
		c.MaxSide = photo.DefaultMaxSide
	}
	if c.Hardware == "" {
		c.Hardware = defaultHardware
	}
	var errs []string
	if known(req, "trainer") {
		c.Trainer = firstNonEmpty(a.Trainer, set.Trainer)
		if c.Trainer == "" {
			errs = append(errs, `no trainer: set trainer = "owner/name:version" in the stage or in the replicate block (e.g. "ostris/flux-dev-lora-trainer:<version id>")`)
		} else {
			_, _, c.TrainerVersion, _ = replicate.SplitVersion(c.Trainer)
		}
	}
	if known(req, "destination") {
		c.Destination = firstNonEmpty(a.Destination, set.Destination)
		if c.Destination == "" {
			errs = append(errs, `no destination: set destination = "owner/name" (the model that receives the new version) in the stage or in the replicate block`)
		} else {
			c.DestOwner, c.DestName, _ = replicate.SplitModel(c.Destination)
		}
	}
	if req.Known("images") && req.Input("images").IsNull() {
		errs = append(errs, "images is null: set images = image_check.NAME.accepted (or a list of files)")
	} else if req.Known("images") {
		files, err := collectImages(req.BaseDir, a.Images)
		if err != nil {
			errs = append(errs, err.Error())
		} else {
			c.Images, c.ImagesKnown = files, true
		}
	}
	if !req.Known("input") {
		// known after apply
	} else if in, ok, err := inputMap(a.Input); err != nil {
		errs = append(errs, err.Error())
	} else if ok {
		c.Input, c.InputKnown = in, true
	}
	c.Poll = pollInterval(req, a.Poll)
	if declared, unknown, err := limits.FromBlocks(req.Blocks); err != nil {
		errs = append(errs, err.Error())
	} else {
		c.Limits, c.LimitsKnown, c.unknownLimit = declared, unknown == "", unknown
	}
	if len(errs) > 0 {
		return nil, errors.Join(pipeline.Err(diags), errors.New(strings.Join(errs, "; ")))
	}
	if err := pipeline.Err(diags); err != nil {
		return nil, err
	}
	return c, nil
}

// known reports whether a stage attribute that falls back to the replicate block is known: the
// stage's own value and the block's.
func known(req *pipeline.Request, name string) bool {
	if !req.Known(name) {
		return false
	}
	s, ok := req.Settings["replicate"]
	if !ok || s == cty.NilVal || s.IsNull() {
		return true
	}
	if !s.IsKnown() {
		return false
	}
	if s.Type().IsObjectType() && s.Type().HasAttribute(name) {
		return s.GetAttr(name).IsWhollyKnown()
	}
	return true
}

func firstNonEmpty(vals ...string) string {
	for _, v := range vals {
		if v = strings.TrimSpace(v); v != "" {
			return v
		}
	}
	return ""
}

// pollInterval turns poll_interval into a Poller that backs off from it (to 12x, at most a minute
// unless the interval itself is longer). Under -simulate it starts at simulatedPoll.
func pollInterval(req *pipeline.Request, d time.Duration) replicate.Poller {
	if req.Env != nil && req.Env.Simulated {
		// The simulator's trainings take seconds: poll often, back off only a little.
		return replicate.Poller{Initial: simulatedPoll, Max: 4 * simulatedPoll}
	}
	if d <= 0 {
		d = 5 * time.Second
	}
	return replicate.Poller{Initial: d, Max: max(d, min(12*d, time.Minute))}
}

// inputMap converts the `input` attribute (any object or map) to plain JSON values. ok is false
// while it is not wholly known.
func inputMap(v cty.Value) (map[string]any, bool, error) {
	if v == cty.NilVal {
		return map[string]any{}, true, nil
	}
	v, _ = v.UnmarkDeep()
	if !v.IsWhollyKnown() {
		return nil, false, nil
	}
	if v.IsNull() {
		return map[string]any{}, true, nil
	}
	ty := v.Type()
	if !ty.IsObjectType() && !ty.IsMapType() {
		return nil, false, fmt.Errorf("input must be an object of trainer inputs (e.g. { steps = 1000, trigger_word = \"TOK\" }), got %s", ty.FriendlyName())
	}
	raw, err := ctyjson.Marshal(v, ty)
	if err != nil {
		return nil, false, fmt.Errorf("input: %w", err)
	}
	out := map[string]any{}
	if err := json.Unmarshal(raw, &out); err != nil {
		return nil, false, fmt.Errorf("input: %w", err)
	}
	for k, val := range out {
		if val == nil {
			delete(out, k) // null means "not set": the trainer's default applies
		}
	}
	if _, ok := out["input_images"]; ok {
		return nil, false, fmt.Errorf("input sets input_images, which the train stage fills in from `images` (the uploaded zip): remove it from input")
	}
	return out, true, nil
}

// trainerInput is what is sent to the trainer: the configured input plus the uploaded zip's URL.
func trainerInput(in map[string]any, fileURL string) map[string]any {
	out := make(map[string]any, len(in)+1)
	for k, v := range in {
		out[k] = v
	}
	out["input_images"] = fileURL
	return out
}

// publicInput drops secrets (and input_images when drop is set): what may be recorded and shown.
func publicInput(in map[string]any, dropImages bool) map[string]any {
	out := make(map[string]any, len(in))
	for k, v := range in {
		if isSecret(k) || (dropImages && k == "input_images") {
			continue
		}
		out[k] = v
	}
	return out
}

// inputOutput is the `input` output: an object of what was sent, with its types (numbers stay
// numbers: train.lora.input.steps is 1000), without input_images and without secrets.
func inputOutput(in map[string]any) cty.Value {
	pub := publicInput(in, true)
	if len(pub) == 0 {
		return cty.EmptyObjectVal
	}
	b, err := json.Marshal(pub)
	if err != nil {
		return cty.EmptyObjectVal
	}
	ty, err := ctyjson.ImpliedType(b)
	if err != nil {
		return cty.EmptyObjectVal
	}
	v, err := ctyjson.Unmarshal(b, ty)
	if err != nil {
		return cty.EmptyObjectVal
	}
	return v
}

// describeInput renders the input for notes: name=value in name order, secrets as (sensitive).
func describeInput(in map[string]any) string {
	names := make([]string, 0, len(in))
	for k := range in {
		names = append(names, k)
	}
	sort.Strings(names)
	parts := make([]string, 0, len(names))
	for _, k := range names {
		if isSecret(k) {
			parts = append(parts, k+"=(sensitive)")
			continue
		}
		b, _ := json.Marshal(in[k])
		parts = append(parts, k+"="+string(b))
	}
	return "{" + strings.Join(parts, ", ") + "}"
}

// checkInputs compares the input with the trainer version's input schema: unknown names (with a
// suggestion), wrong types, values outside the schema's bounds or enum, and missing required inputs.
func checkInputs(trainer string, specs map[string]replicate.InputSpec, in map[string]any) error {
	var errs []string
	names := make([]string, 0, len(in))
	for k := range in {
		names = append(names, k)
	}
	sort.Strings(names)
	accepted := make([]string, 0, len(specs))
	for k := range specs {
		if k != "input_images" {
			accepted = append(accepted, k)
		}
	}
	sort.Strings(accepted)
	for _, name := range names {
		spec, ok := specs[name]
		if !ok {
			msg := fmt.Sprintf("input %q is not an input of trainer %s", name, trainer)
			if s := pipeline.Suggest(name, accepted); s != "" {
				msg += fmt.Sprintf(" (did you mean %q?)", s)
			} else {
				msg += " (it accepts: " + strings.Join(accepted, ", ") + ")"
			}
			errs = append(errs, msg)
			continue
		}
		if msg := checkValue(name, spec, in[name]); msg != "" {
			errs = append(errs, msg)
		}
	}
	for _, name := range accepted {
		spec := specs[name]
		if _, set := in[name]; !set && spec.Required && spec.Default == nil {
			errs = append(errs, fmt.Sprintf("input %q is required by trainer %s and has no default: set it in input", name, trainer))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return nil
}

// checkValue checks one value against its schema entry; "" when it fits.
func checkValue(name string, spec replicate.InputSpec, v any) string {
	shown := func() string {
		if isSecret(name) {
			return "(sensitive)"
		}
		b, _ := json.Marshal(v)
		return string(b)
	}
	if v == nil {
		return ""
	}
	switch spec.Type {
	case "integer", "number":
		f, ok := v.(float64)
		if !ok {
			return fmt.Sprintf("input %s = %s must be a %s", name, shown(), spec.Type)
		}
		if spec.Type == "integer" && f != math.Trunc(f) {
			return fmt.Sprintf("input %s = %s must be a whole number", name, shown())
		}
		if spec.Minimum != nil && f < *spec.Minimum {
			return fmt.Sprintf("input %s = %s is below the trainer's minimum %v", name, shown(), *spec.Minimum)
		}
		if spec.Maximum != nil && f > *spec.Maximum {
			return fmt.Sprintf("input %s = %s is above the trainer's maximum %v", name, shown(), *spec.Maximum)
		}
	case "string":
		if _, ok := v.(string); !ok {
			return fmt.Sprintf("input %s = %s must be a string", name, shown())
		}
	case "boolean":
		if _, ok := v.(bool); !ok {
			return fmt.Sprintf("input %s = %s must be true or false", name, shown())
		}
	}
	if len(spec.Enum) > 0 {
		got, _ := json.Marshal(v)
		var opts []string
		for _, e := range spec.Enum {
			b, _ := json.Marshal(e)
			if string(b) == string(got) {
				return ""
			}
			// Numbers in the schema may be written 16 or 16.0: compare them as numbers too.
			if ef, ok := toFloat(e); ok {
				if vf, ok := v.(float64); ok && ef == vf {
					return ""
				}
			}
			opts = append(opts, string(b))
		}
		return fmt.Sprintf("input %s = %s is not one of %s", name, shown(), strings.Join(opts, ", "))
	}
	return ""
}

func toFloat(v any) (float64, bool) {
	switch n := v.(type) {
	case float64:
		return n, true
	case int:
		return float64(n), true
	case json.Number:
		f, err := n.Float64()
		return f, err == nil
	}
	return 0, false
}
