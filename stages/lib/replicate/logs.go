package replicate

import (
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// LossPoint is the training loss at one step.
type LossPoint struct {
	Step int
	Loss float64
}

// LogProgress is what ParseLogs reads from a training's logs.
type LogProgress struct {
	// Step and Total come from the latest training progress bar (0 before the first one).
	Step, Total int
	// Losses are ordered by step, one per step (a redrawn bar's last value wins).
	Losses []LossPoint
}

var (
	ansiRe = regexp.MustCompile(`\x1b\[[0-9;?]*[A-Za-z]`)
	// A tqdm bar: "45%|████▌     | 450/1000 [05:12<06:21,  1.44it/s, lr: 4.0e-04 loss: 3.512e-01]".
	// The closing bracket is required so a bar cut off mid-number is never read.
	barRe = regexp.MustCompile(`\d+%\|[^|]*\|\s*(\d+)/(\d+)\s*\[([^\]]*)\]`)
	// The loss value must be followed by a separator, so "3.512e" from a cut line is not "3.512".
	// Any case and spacing ("Loss: 0.35", "loss = 0.35"): trainers and their versions differ.
	lossRe = regexp.MustCompile(`(?i)(?:^|[\s,])loss\s*[:=]\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?)(?:[\s,]|$)`)
	lrRe   = regexp.MustCompile(`(?i)(?:^|[\s,])lr\s*[:=]`)
)

// ParseLogs reads training progress and the loss series from ai-toolkit style logs: tqdm bars
// redrawn with \r, a partial last line, and unrelated lines and bars (model loading, latent
// caching) in between. Only bars that carry the trainer's postfix (loss or lr) count as training
// progress; a bar whose postfix is cut off is ignored.
func ParseLogs(logs string) LogProgress {
	var p LogProgress
	byStep := map[int]float64{}
	logs = ansiRe.ReplaceAllString(logs, "")
	segments := strings.FieldsFunc(logs, func(r rune) bool { return r == '\n' || r == '\r' })
	for _, seg := range segments {
		for _, m := range barRe.FindAllStringSubmatch(seg, -1) {
			postfix := m[3]
			loss := lossRe.FindStringSubmatch(postfix)
			if loss == nil && !lrRe.MatchString(postfix) {
				continue // an unrelated bar: loading shards, caching latents
			}
			step, err1 := strconv.Atoi(m[1])
			total, err2 := strconv.Atoi(m[2])
			if err1 != nil || err2 != nil || total <= 0 || step > total {
				continue
			}
			p.Step, p.Total = step, total
			if loss == nil {
				continue
			}
			v, err := strconv.ParseFloat(loss[1], 64)
			if err != nil || v != v || v > 1e30 || v < -1e30 {
				continue
			}
			byStep[step] = v
		}
	}
	p.Losses = make([]LossPoint, 0, len(byStep))
	for s, l := range byStep {
		p.Losses = append(p.Losses, LossPoint{Step: s, Loss: l})
	}
	sort.Slice(p.Losses, func(i, j int) bool { return p.Losses[i].Step < p.Losses[j].Step })
	return p
}
