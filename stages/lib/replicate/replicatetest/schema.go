package replicatetest

import (
	"fmt"
	"math"
	"sort"
	"strings"
)

// prop is one input of a cog model's OpenAPI schema.
type prop struct {
	name     string
	typ      string // integer, number, string, boolean
	format   string // uri, password
	min, max *float64
	enum     []string
	def      any
	secret   bool
	desc     string
}

func f(v float64) *float64 { return &v }

// trainerInputs models ostris/flux-dev-lora-trainer's train() inputs.
var trainerInputs = []prop{
	{name: "input_images", typ: "string", format: "uri", desc: "A zip file containing the images that will be used for training. We recommend a minimum of 10 images."},
	{name: "trigger_word", typ: "string", def: "TOK", desc: "The trigger word refers to the object, style or concept you are training on."},
	{name: "autocaption", typ: "boolean", def: true, desc: "Automatically caption images using Llava v1.5 13B"},
	{name: "autocaption_prefix", typ: "string", desc: "Optional: Text you want to appear at the beginning of all your generated captions."},
	{name: "autocaption_suffix", typ: "string", desc: "Optional: Text you want to appear at the end of all your generated captions."},
	{name: "steps", typ: "integer", min: f(3), max: f(6000), def: 1000, desc: "Number of training steps. Recommended range 500-4000"},
	{name: "learning_rate", typ: "number", def: 4e-4, desc: "Learning rate, if you're new to training you probably don't need to change this."},
	{name: "batch_size", typ: "integer", def: 1, desc: "Batch size, you can leave this as 1"},
	{name: "resolution", typ: "string", def: "512,768,1024", desc: "Image resolutions for training"},
	{name: "lora_rank", typ: "integer", min: f(1), max: f(128), def: 16, desc: "Higher ranks take longer to train but can capture more complex features."},
	{name: "caption_dropout_rate", typ: "number", min: f(0), max: f(1), def: 0.05, desc: "Advanced setting. Determines how often a caption is ignored."},
	{name: "optimizer", typ: "string", def: "adamw8bit", desc: "Optimizer to use for training. Supports: prodigy, adam8bit, adamw8bit, lion8bit, adam, adamw, lion, adagrad, adafactor."},
	{name: "cache_latents_to_disk", typ: "boolean", def: false, desc: "Use this if you have lots of input images and you hit out of memory errors"},
	{name: "layers_to_optimize_regex", typ: "string", desc: "Regular expression to match specific layers to optimize."},
	{name: "gradient_checkpointing", typ: "boolean", def: false, desc: "Turn on gradient checkpointing; saves memory at the cost of training speed."},
	{name: "hf_repo_id", typ: "string", desc: "Hugging Face repository ID, if you'd like to upload the trained LoRA to Hugging Face."},
	{name: "hf_token", typ: "string", format: "password", secret: true, desc: "Hugging Face token, if you'd like to upload the trained LoRA to Hugging Face."},
	{name: "wandb_api_key", typ: "string", format: "password", secret: true, desc: "Weights and Biases API key, if you'd like to log training progress to W&B."},
	{name: "wandb_project", typ: "string", def: "flux_train_replicate", desc: "Weights and Biases project name."},
	{name: "wandb_run", typ: "string", desc: "Weights and Biases run name."},
	{name: "wandb_entity", typ: "string", desc: "Weights and Biases entity name."},
	{name: "wandb_sample_interval", typ: "integer", min: f(1), def: 100, desc: "Step interval for sampling output images that are logged to W&B."},
	{name: "wandb_sample_prompts", typ: "string", desc: "Newline-separated list of prompts to use when logging samples to W&B."},
	{name: "wandb_save_interval", typ: "integer", min: f(1), def: 100, desc: "Step interval for saving intermediate LoRA weights to W&B."},
	{name: "skip_training_and_use_pretrained_hf_lora_url", typ: "string", desc: "Create a Replicate model from a pre-trained LoRA on HuggingFace."},
}

// loraInputs models the prediction inputs of a version trained by the trainer (flux-fine-tuner's
// predict.py: lora_scale is bounded to -1..2).
var loraInputs = []prop{
	{name: "prompt", typ: "string", desc: "Prompt for generated image. Include the trigger word."},
	{name: "seed", typ: "integer", desc: "Random seed. Set for reproducible generation"},
	{name: "model", typ: "string", enum: []string{"dev", "schnell"}, def: "dev", desc: "Which model to run inference with."},
	{name: "lora_scale", typ: "number", min: f(-1), max: f(2), def: 1, desc: "Determines how strongly the main LoRA should be applied."},
	{name: "num_outputs", typ: "integer", min: f(1), max: f(4), def: 1, desc: "Number of outputs to generate"},
	{name: "aspect_ratio", typ: "string", enum: []string{"1:1", "16:9", "21:9", "3:2", "2:3", "4:5", "5:4", "3:4", "4:3", "9:16", "9:21", "custom"}, def: "1:1", desc: "Aspect ratio for the generated image."},
	{name: "output_format", typ: "string", enum: []string{"webp", "jpg", "png"}, def: "webp", desc: "Format of the output images"},
	{name: "guidance_scale", typ: "number", min: f(0), max: f(10), def: 3, desc: "Guidance scale for the diffusion process."},
	{name: "output_quality", typ: "integer", min: f(0), max: f(100), def: 80, desc: "Quality when saving the output images, from 0 to 100."},
	{name: "prompt_strength", typ: "number", min: f(0), max: f(1), def: 0.8, desc: "Prompt strength when using img2img."},
	{name: "num_inference_steps", typ: "integer", min: f(1), max: f(50), def: 28, desc: "Number of denoising steps."},
	{name: "go_fast", typ: "boolean", def: false, desc: "Run faster predictions with a model optimized for speed."},
	{name: "disable_safety_checker", typ: "boolean", def: false, desc: "Disable safety checker for generated images."},
	{name: "megapixels", typ: "string", enum: []string{"1", "0.25"}, def: "1", desc: "Approximate number of megapixels for generated image"},
}

// openAPISchema renders a cog-style schema: components.schemas.Input (predictions) and, for a
// trainer, components.schemas.TrainingInput; enums go through allOf/$ref as cog emits them.
func openAPISchema(trainer bool) map[string]any {
	schemas := map[string]any{}
	objectSchema := func(title string, props []prop) map[string]any {
		properties := map[string]any{}
		for i, p := range props {
			s := map[string]any{"title": titleOf(p.name), "description": p.desc, "x-order": i}
			if p.enum != nil {
				enumName := p.name
				schemas[enumName] = map[string]any{"title": enumName, "description": "An enumeration.", "type": "string", "enum": p.enum}
				s["allOf"] = []any{map[string]any{"$ref": "#/components/schemas/" + enumName}}
			} else {
				s["type"] = p.typ
			}
			if p.format != "" {
				s["format"] = p.format
			}
			if p.secret {
				s["writeOnly"] = true
				s["x-cog-secret"] = true
			}
			if p.min != nil {
				s["minimum"] = *p.min
			}
			if p.max != nil {
				s["maximum"] = *p.max
			}
			if p.def != nil {
				s["default"] = p.def
			}
			properties[p.name] = s
		}
		return map[string]any{"title": title, "type": "object", "properties": properties}
	}
	schemas["Input"] = objectSchema("Input", loraInputs)
	schemas["Output"] = map[string]any{"title": "Output", "type": "array", "items": map[string]any{"type": "string", "format": "uri"}}
	if trainer {
		schemas["TrainingInput"] = objectSchema("TrainingInput", trainerInputs)
		schemas["TrainingOutput"] = map[string]any{"title": "TrainingOutput", "type": "object", "required": []string{"weights"},
			"properties": map[string]any{"weights": map[string]any{"title": "Weights", "type": "string", "format": "uri"}}}
	}
	return map[string]any{
		"openapi": "3.0.2",
		"info":    map[string]any{"title": "Cog", "version": "0.1.0"},
		"paths":   map[string]any{},
		"components": map[string]any{
			"schemas": schemas,
		},
	}
}

func titleOf(name string) string {
	parts := strings.Split(name, "_")
	for i, p := range parts {
		if p != "" {
			parts[i] = strings.ToUpper(p[:1]) + p[1:]
		}
	}
	return strings.Join(parts, " ")
}

// validate checks input against props like cog does and returns the invalid fields' messages
// ("input.steps: Must be less than or equal to 6000"); strict rejects unknown names.
func validate(input map[string]any, props []prop, strict bool) []string {
	byName := map[string]prop{}
	for _, p := range props {
		byName[p.name] = p
	}
	names := make([]string, 0, len(input))
	for k := range input {
		names = append(names, k)
	}
	sort.Strings(names)
	var errs []string
	for _, k := range names {
		v := input[k]
		p, ok := byName[k]
		if !ok {
			if strict {
				errs = append(errs, fmt.Sprintf("input: Additional property %s is not allowed", k))
			}
			continue
		}
		if v == nil {
			continue
		}
		field := "input." + k
		switch p.typ {
		case "integer":
			n, ok := v.(float64)
			if !ok || n != math.Trunc(n) {
				errs = append(errs, fmt.Sprintf("%s: Invalid type. Expected: integer, given: %s", field, jsonType(v)))
				continue
			}
		case "number":
			if _, ok := v.(float64); !ok {
				errs = append(errs, fmt.Sprintf("%s: Invalid type. Expected: number, given: %s", field, jsonType(v)))
				continue
			}
		case "string":
			s, ok := v.(string)
			if !ok {
				errs = append(errs, fmt.Sprintf("%s: Invalid type. Expected: string, given: %s", field, jsonType(v)))
				continue
			}
			if p.enum != nil && !contains(p.enum, s) {
				errs = append(errs, fmt.Sprintf("%s: %s must be one of the following: %s", field, k, quoteAll(p.enum)))
			}
			if p.format == "uri" && !(strings.HasPrefix(s, "http://") || strings.HasPrefix(s, "https://") || strings.HasPrefix(s, "data:")) {
				errs = append(errs, fmt.Sprintf("%s: Does not match format 'uri'", field))
			}
			continue
		case "boolean":
			if _, ok := v.(bool); !ok {
				errs = append(errs, fmt.Sprintf("%s: Invalid type. Expected: boolean, given: %s", field, jsonType(v)))
			}
			continue
		}
		n := v.(float64)
		if p.min != nil && n < *p.min {
			errs = append(errs, fmt.Sprintf("%s: Must be greater than or equal to %v", field, *p.min))
		}
		if p.max != nil && n > *p.max {
			errs = append(errs, fmt.Sprintf("%s: Must be less than or equal to %v", field, *p.max))
		}
	}
	return errs
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func quoteAll(list []string) string {
	q := make([]string, len(list))
	for i, s := range list {
		q[i] = `"` + s + `"`
	}
	return strings.Join(q, ", ")
}

func jsonType(v any) string {
	switch v.(type) {
	case float64:
		return "number"
	case string:
		return "string"
	case bool:
		return "boolean"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	case nil:
		return "null"
	}
	return fmt.Sprintf("%T", v)
}

// redactSecrets replaces secret inputs by the marker the API shows instead of their value.
func redactSecrets(input map[string]any, props []prop) map[string]any {
	out := make(map[string]any, len(input))
	for k, v := range input {
		out[k] = v
	}
	for _, p := range props {
		if p.secret {
			if v, ok := out[p.name]; ok && v != nil {
				out[p.name] = SecretMarker
			}
		}
	}
	return out
}

// SecretMarker is what the API shows instead of a secret input's value (hf_token, wandb_api_key).
const SecretMarker = "**********"
