package generate

import (
	"fmt"
	"strings"
	"time"

	"github.com/pipeline-dev/pipeline/pipeline"
	"github.com/pipeline-dev/pipeline/stages/lib/replicate"
)

// dataRetention is how long Replicate keeps an API prediction's output after it finished: a
// recorded prediction older than that whose image is not on disk runs again.
const dataRetention = time.Hour

// money is what the cost figures need from the replicate block (none of it enters a digest).
type money struct {
	hardware string
	prices   replicate.Prices
	limit    *float64
}

func moneyOf(s replicate.Settings) money {
	hw := strings.TrimSpace(s.PredictionHardware)
	if hw == "" {
		hw = replicate.DefaultPredictionHardware
	}
	return money{hardware: hw, prices: replicate.PriceTable(s.Prices), limit: s.MaxCostUSD}
}

// unknownPrice is the warning when the price table lacks the prediction hardware.
func (m money) unknownPrice() string {
	return fmt.Sprintf("no price for prediction_hardware %q: the predictions' cost is not shown; set replicate { prices = { %q = <USD per second> } }", m.hardware, m.hardware)
}

// rate says the hardware and its price for a cost's basis.
func (m money) rate(perSecond float64) string {
	return fmt.Sprintf("on %s at $%g/s", m.hardware, perSecond)
}

// estimate is plan's figure for n predictions of secs seconds each; measured counts the earlier
// predictions secs comes from (0: SPEC's default).
func (m money) estimate(n int, secs float64, measured int) (*pipeline.Cost, bool) {
	per, ok := m.prices.PerSecond(m.hardware)
	if !ok {
		return nil, false
	}
	from := "SPEC's default: no earlier prediction of this subject"
	if measured > 0 {
		from = fmt.Sprintf("the mean of %d earlier prediction(s) of this subject", measured)
	}
	return &pipeline.Cost{USD: float64(n) * secs * per, Estimate: true,
		Basis: fmt.Sprintf("%d prediction(s) × %.1f s (%s) %s", n, secs, from, m.rate(per))}, true
}

// actual is apply's figure: seconds of metrics.predict_time over n predictions this stage had not
// reported before.
func (m money) actual(n int, seconds float64) (*pipeline.Cost, bool) {
	per, ok := m.prices.PerSecond(m.hardware)
	if !ok {
		return nil, false
	}
	return &pipeline.Cost{USD: seconds * per,
		Basis: fmt.Sprintf("%d prediction(s), %.1f s of predict_time %s", n, seconds, m.rate(per))}, true
}

// measured is the mean predict_time of the runs that have one, and how many do.
func measured(runs []*run) (mean float64, n int) {
	var sum float64
	for _, r := range runs {
		if r != nil && r.PredictTime > 0 {
			sum += r.PredictTime
			n++
		}
	}
	if n == 0 {
		return 0, 0
	}
	return sum / float64(n), n
}

// secondsPerPrediction is what plan multiplies by: this subject's measured mean, else the default.
func (rec *record) secondsPerPrediction() (secs float64, n int) {
	if mean, n := measured(rec.Runs); n > 0 {
		return mean, n
	}
	if rec.SecondsPerPrediction > 0 {
		return rec.SecondsPerPrediction, rec.PredictionsMeasured
	}
	return replicate.DefaultPredictionSeconds, 0
}

// remeasure keeps the measured mean in the record, so that it outlives the runs it came from (a
// changed prompt replaces them all).
func (rec *record) remeasure() {
	if mean, n := measured(rec.Runs); n > 0 {
		rec.SecondsPerPrediction, rec.PredictionsMeasured = mean, n
	}
}

// unreported sums the predict_time no reported cost holds yet: the runs' and the carried seconds
// of predictions dropped before their cost was reported (run again after a failure or expiry).
func (rec *record) unreported() (n int, seconds float64) {
	for _, r := range rec.Runs {
		if r.CostUnreported {
			n++
			seconds += r.PredictTime
		}
	}
	return n + rec.CarriedPredictions, seconds + rec.CarriedSeconds
}

// reported marks every cost as shown: the next apply counts only what it runs itself.
func (rec *record) reported() {
	for _, r := range rec.Runs {
		r.CostUnreported = false
	}
	rec.CarriedPredictions, rec.CarriedSeconds = 0, 0
}

// forget clears r's prediction so that it runs again, carrying its cost when no apply reported it.
func (rec *record) forget(r *run) {
	if r.CostUnreported {
		rec.CarriedPredictions++
		rec.CarriedSeconds += r.PredictTime
	}
	r.IntentAt, r.PredictionID, r.Status, r.Error = time.Time{}, "", "", ""
	r.PredictTime, r.CostUnreported = 0, false
}

// planCost estimates the predictions apply would start: every prompt × seed on each side that
// the prior record cannot supply. Without a known previous version (no token, or the new version
// is known only after apply) it counts the comparison's runs too: an estimate that a limit
// holds to errs high. nil: nothing paid would start, or the runs are not known yet.
func planCost(req *pipeline.Request, c *config, prev prevLookup) (*pipeline.Cost, string) {
	if !c.promptsKnown || !c.seedsKnown {
		return nil, ""
	}
	var prior record
	_, _ = req.Prior.Decode(&prior) // unreadable: nothing to reuse, Apply warns
	previous, assumed := "", false
	if c.ComparePrevious {
		previous, assumed = prev.version, !prev.known
		if assumed {
			previous = "(the previous version)" // matches no recorded run
		}
	}
	if !c.versionKnown {
		known := *c
		known.Version = "(the new version)" // matches no recorded run
		c = &known
	}
	old, now := byKey(prior.Runs), time.Now()
	start, reuse := 0, 0
	for _, r := range c.wantedRuns(previous) {
		if o := old[r.key()]; o != nil && reusable(req.BaseDir, o, now) {
			reuse++
		} else {
			start++
		}
	}
	if start == 0 {
		return nil, ""
	}
	secs, n := prior.secondsPerPrediction()
	cost, ok := c.money.estimate(start, secs, n)
	if !ok {
		return nil, c.money.unknownPrice()
	}
	if assumed {
		cost.Basis += "; counting the previous version's runs (skipped if there is none)"
	}
	if reuse > 0 {
		cost.Basis += fmt.Sprintf("; %d reused from the last run at no cost", reuse)
	}
	return cost, ""
}

// reusable reports whether apply takes a recorded run as it is, starting nothing: its image is on
// disk, or its prediction still runs, or finished recently enough that its output can be had.
func reusable(base string, o *run, now time.Time) bool {
	if o.PredictionID == "" || replicate.Unsuccessful(o.Status) {
		return fileIntact(base, o)
	}
	return fileIntact(base, o) || !terminalStatus(o.Status) || (!o.IntentAt.IsZero() && now.Sub(o.IntentAt) < dataRetention)
}
