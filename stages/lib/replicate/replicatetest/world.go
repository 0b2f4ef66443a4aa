package replicatetest

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strings"
	"time"
)

// The trainer every world starts with: ostris/flux-dev-lora-trainer with version ids seen in
// public use (TrainerVersion is the newest here).
const (
	TrainerModel   = "ostris/flux-dev-lora-trainer"
	TrainerVersion = "e440909d3512c31646ee2e0c7d6f6f4923224863a6a10c494606e79fb5844497"
	// Trainer is the "owner/name:version" reference a config's replicate block uses.
	Trainer = TrainerModel + ":" + TrainerVersion
)

var olderTrainerVersions = []string{
	"26dce37af90b9d997eeb970d92e47de3064d46c300504ae376c75bef6a9022d2",
	"4ffd32160efd92e956d39c5338a9b8fbafca58e03f791f6d8011f3e20e8ea6fa",
	"b6af14222e6bd9be257cbc1ea4afda3cd0503e1133083b9d1de0364d8568e6ef",
}

// world is everything the server knows; it is what WorldFile persists (file bytes go beside it).
type world struct {
	Seq         int                  `json:"seq"`
	Files       map[string]*fileRec  `json:"files"`
	Models      map[string]*modelRec `json:"models"` // "owner/name"
	Trainings   []*trainingRec       `json:"trainings"`
	Predictions []*predictionRec     `json:"predictions"`
	Forbid      map[string]string    `json:"forbid_delete,omitempty"` // version id → detail
	data        map[string][]byte    // file id → bytes (saved as blobs)
}

type fileRec struct {
	ID          string    `json:"id"`
	Name        string    `json:"name"`
	ContentType string    `json:"content_type"`
	Size        int64     `json:"size"`
	SHA256      string    `json:"sha256"`
	CreatedAt   time.Time `json:"created_at"`
}

type modelRec struct {
	Owner       string        `json:"owner"`
	Name        string        `json:"name"`
	Visibility  string        `json:"visibility"`
	Hardware    string        `json:"hardware"`
	Description string        `json:"description,omitempty"`
	Trainer     bool          `json:"trainer,omitempty"`
	CreatedAt   time.Time     `json:"created_at"`
	Versions    []*versionRec `json:"versions"` // oldest first
}

type versionRec struct {
	ID         string    `json:"id"`
	CreatedAt  time.Time `json:"created_at"`
	TrainingID string    `json:"training_id,omitempty"`
	// Deleting: a delete was accepted (202) but has not taken effect yet; the version is still
	// listed for ListsLeft more list calls of its model.
	Deleting  bool `json:"deleting,omitempty"`
	ListsLeft int  `json:"lists_left,omitempty"`
}

type trainingRec struct {
	ID            string         `json:"id"`
	Model         string         `json:"model"`   // trainer "owner/name"
	Version       string         `json:"version"` // trainer version id
	Destination   string         `json:"destination"`
	Input         map[string]any `json:"input"` // secrets redacted, as the API shows it
	Status        string         `json:"status"`
	Error         string         `json:"error,omitempty"`
	Step          int            `json:"step"`
	Polls         int            `json:"polls"`
	CreatedAt     time.Time      `json:"created_at"`
	StartedAt     *time.Time     `json:"started_at,omitempty"`
	CompletedAt   *time.Time     `json:"completed_at,omitempty"`
	OutputVersion string         `json:"output_version,omitempty"`
	// ListsLeft: list calls that still miss it (Server.ListLag).
	ListsLeft int `json:"lists_left,omitempty"`
}

type predictionRec struct {
	ID          string         `json:"id"`
	Model       string         `json:"model"`
	Version     string         `json:"version"`
	Input       map[string]any `json:"input"`
	Status      string         `json:"status"`
	Error       string         `json:"error,omitempty"`
	Polls       int            `json:"polls"`
	CreatedAt   time.Time      `json:"created_at"`
	StartedAt   *time.Time     `json:"started_at,omitempty"`
	CompletedAt *time.Time     `json:"completed_at,omitempty"`
	// DataRemoved: input, output and logs are gone (the API removes them an hour after an API
	// prediction finishes).
	DataRemoved bool `json:"data_removed,omitempty"`
	// ListsLeft: list calls that still miss it (Server.ListLag).
	ListsLeft int `json:"lists_left,omitempty"`
}

func newWorld(now time.Time) *world {
	w := &world{Files: map[string]*fileRec{}, Models: map[string]*modelRec{}, Forbid: map[string]string{}, data: map[string][]byte{}}
	owner, name, _ := strings.Cut(TrainerModel, "/")
	m := &modelRec{Owner: owner, Name: name, Visibility: "public", Hardware: "gpu-h100", Trainer: true,
		Description: "Fine-tune FLUX.1-dev using ai-toolkit", CreatedAt: now.Add(-400 * 24 * time.Hour)}
	for i, id := range append(append([]string{}, olderTrainerVersions...), TrainerVersion) {
		m.Versions = append(m.Versions, &versionRec{ID: id, CreatedAt: now.Add(-time.Duration(300-30*i) * 24 * time.Hour)})
	}
	w.Models[TrainerModel] = m
	return w
}

func (w *world) fix() {
	if w.Files == nil {
		w.Files = map[string]*fileRec{}
	}
	if w.Models == nil {
		w.Models = map[string]*modelRec{}
	}
	if w.Forbid == nil {
		w.Forbid = map[string]string{}
	}
	if w.data == nil {
		w.data = map[string][]byte{}
	}
}

// newID returns a Replicate-like id: 26 random base32 characters (lowercase), unique across
// reloads of a world file.
func (w *world) newID() string {
	w.Seq++
	var b [16]byte
	_, _ = rand.Read(b[:])
	const alphabet = "abcdefghijklmnopqrstuvwxyz234567"
	var sb strings.Builder
	for i := 0; i < 26; i++ {
		bit := i * 5
		v := uint16(b[bit/8]) << 8
		if bit/8+1 < len(b) {
			v |= uint16(b[bit/8+1])
		}
		sb.WriteByte(alphabet[(v>>(11-bit%8))&31])
	}
	return sb.String()
}

// newVersionID returns a 64-hex version id.
func (w *world) newVersionID() string {
	w.Seq++
	var b [32]byte
	_, _ = rand.Read(b[:])
	sum := sha256.Sum256(append(b[:], byte(w.Seq)))
	return hex.EncodeToString(sum[:])
}

// findVersion finds a version by id or "owner/name:id".
func (w *world) findVersion(ref string) (*modelRec, *versionRec) {
	id := ref
	if i := strings.LastIndex(ref, ":"); i >= 0 {
		id = ref[i+1:]
		if m := w.Models[ref[:i]]; m != nil {
			for _, v := range m.Versions {
				if v.ID == id {
					return m, v
				}
			}
			return nil, nil
		}
		return nil, nil
	}
	keys := make([]string, 0, len(w.Models))
	for k := range w.Models {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		for _, v := range w.Models[k].Versions {
			if v.ID == id {
				return w.Models[k], v
			}
		}
	}
	return nil, nil
}

func (w *world) training(id string) *trainingRec {
	for _, t := range w.Trainings {
		if t.ID == id {
			return t
		}
	}
	return nil
}

func (w *world) prediction(id string) *predictionRec {
	for _, p := range w.Predictions {
		if p.ID == id {
			return p
		}
	}
	return nil
}

// ---- the loss model ----

func num(in map[string]any, key string, def float64) float64 {
	switch v := in[key].(type) {
	case float64:
		return v
	case int:
		return float64(v)
	case int64:
		return float64(v)
	case json.Number:
		f, err := v.Float64()
		if err == nil {
			return f
		}
	}
	return def
}

// Overfit scores how aggressive a trainer input is: 0 for the research defaults (rank 16,
// 1000–1200 steps, learning rate 4e-4), 1 for rank 32 or 1400 steps or twice the learning rate,
// up to 2. Negative values mean gentler than the defaults.
func Overfit(input map[string]any) float64 {
	return overfitAt(input, trainingSteps(input))
}

// overfitAt is Overfit as of step: rank and learning rate count from the start, steps only once
// the run goes past 1150 (so cancel_early has something to save).
func overfitAt(input map[string]any, step int) float64 {
	rank := num(input, "lora_rank", 16)
	lr := num(input, "learning_rate", 4e-4)
	o := math.Max((rank-16)/16, (float64(step)-1150)/200)
	if lr > 0 {
		o = math.Max(o, math.Log2(lr/4e-4))
	}
	return math.Max(-0.5, math.Min(2, o))
}

// FinalLoss is the loss the simulated training settles at for input: ~0.30 for the research
// defaults, below 0.2 once Overfit reaches 1 (rank >= 32, steps >= 1400, learning rate >= 8e-4).
// Short trainings end above it (see Loss).
func FinalLoss(input map[string]any) float64 {
	return lossFloor(input, trainingSteps(input))
}

func lossFloor(input map[string]any, step int) float64 {
	return 0.30 - 0.14*math.Max(0, overfitAt(input, step))
}

// Loss is the simulated loss logged at step: it decays from ~0.85 with a time constant of 250
// steps towards a floor of 0.30, lowered by rank and learning rate from the start and by steps
// beyond 1150 as they happen, plus deterministic noise of at most ±0.015 seeded by the input.
func Loss(input map[string]any, step int) float64 {
	floor := lossFloor(input, step)
	l := floor + (0.85-floor)*math.Exp(-float64(step)/250)
	return math.Max(0.01, l+0.015*noise(inputSeed(input), step))
}

// inputSeed hashes the input (JSON, keys sorted) so curves are deterministic per input.
func inputSeed(input map[string]any) uint64 {
	b, _ := json.Marshal(input)
	sum := sha256.Sum256(b)
	return binary.BigEndian.Uint64(sum[:8])
}

// noise is a deterministic value in [-1, 1].
func noise(seed uint64, step int) float64 {
	x := seed ^ (uint64(step)+1)*0x9E3779B97F4A7C15
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	x *= 0xc4ceb9fe1a85ec53
	x ^= x >> 33
	return float64(x%2001)/1000 - 1
}

func trainingSteps(input map[string]any) int {
	s := int(num(input, "steps", 1000))
	if s < 1 {
		s = 1
	}
	return s
}

// ---- logs ----

const jobName = "flux_train_replicate"

func bar(step, total int, postfix string) string {
	pct := step * 100 / total
	cells := float64(step) / float64(total) * 10
	full := int(cells)
	var b strings.Builder
	b.WriteString(strings.Repeat("█", full))
	if full < 10 {
		parts := []string{"", "▏", "▎", "▍", "▌", "▋", "▊", "▉"}
		frac := int((cells - float64(full)) * 8)
		b.WriteString(parts[frac])
		b.WriteString(strings.Repeat(" ", 10-full-1))
		if frac == 0 {
			b.WriteString(" ")
		}
	}
	// 1.44 it/s, as on an H100 with rank 16.
	elapsed := time.Duration(float64(step)/1.44) * time.Second
	remain := time.Duration(float64(total-step)/1.44) * time.Second
	timing := fmt.Sprintf("%s<%s", clock(elapsed), clock(remain))
	if step == 0 {
		return fmt.Sprintf("%s: %3d%%|%s| %d/%d [00:00<?, ?it/s]", jobName, pct, b.String(), step, total)
	}
	return fmt.Sprintf("%s: %3d%%|%s| %d/%d [%s,  1.44it/s, %s]", jobName, pct, b.String(), step, total, timing, postfix)
}

func clock(d time.Duration) string {
	s := int(d.Seconds())
	if s >= 3600 {
		return fmt.Sprintf("%d:%02d:%02d", s/3600, s/60%60, s%60)
	}
	return fmt.Sprintf("%02d:%02d", s/60, s%60)
}

// trainingLogs renders ai-toolkit style logs for a training that reached t.Step: setup lines with
// unrelated progress bars, the training bar redrawn with \r (postfix "lr: 4.0e-04 loss: 3.512e-01"),
// and, while it runs, a last redraw cut off mid-line as a poll would catch it.
func trainingLogs(t *trainingRec) string {
	if t.Status == "starting" {
		return ""
	}
	total := trainingSteps(t.Input)
	lr := num(t.Input, "learning_rate", 4e-4)
	var b strings.Builder
	b.WriteString("Environment language: Not set\nUpdated environment language: en_US.UTF-8\n")
	b.WriteString("Downloading weights\n2024-08-14T12:00:01Z | INFO  | [ Initiating ] dest=FLUX.1-dev minimum_chunk_size=150M\n")
	b.WriteString("Extracting input_images\n")
	b.WriteString("Loading checkpoint shards: 100%|██████████| 2/2 [00:01<00:00,  1.63it/s]\n")
	b.WriteString("Caching latents to disk: 100%|██████████| 14/14 [00:04<00:00,  3.10it/s]\n")
	b.WriteString("Starting train job\n")
	b.WriteString(bar(0, total, ""))
	every := max(1, total/40)
	for s := every; s <= t.Step; s += every {
		b.WriteString("\r" + bar(s, total, fmt.Sprintf("lr: %.1e loss: %.3e", lr, Loss(t.Input, s))))
	}
	if t.Step%every != 0 && t.Step > 0 {
		b.WriteString("\r" + bar(t.Step, total, fmt.Sprintf("lr: %.1e loss: %.3e", lr, Loss(t.Input, t.Step))))
	}
	switch t.Status {
	case "processing":
		if next := t.Step + every; next <= total {
			full := "\r" + bar(next, total, fmt.Sprintf("lr: %.1e loss: %.3e", lr, Loss(t.Input, next)))
			b.WriteString(full[:len(full)-6]) // cut inside the loss value: "loss: 3.512"
		}
	case "succeeded":
		b.WriteString("\nSaving at step " + fmt.Sprint(total) + "\nSaved to output/flux_train_replicate/lora.safetensors\n")
	case "failed":
		b.WriteString("\nTraceback (most recent call last):\n  File \"/src/train.py\", line 312, in train\n    job.run()\n")
		b.WriteString(t.Error + "\n")
	case "canceled":
		b.WriteString("\n")
	}
	return b.String()
}
