package engine

import (
	"fmt"
	"math"

	"github.com/hashicorp/hcl/v2"

	"github.com/pipeline-dev/pipeline/pipeline"
)

// Money is what a plan expects apply to spend on Replicate, and the most it may.
type Money struct {
	// EstimateUSD sums the estimates of the stages apply would run (an up-to-date stage spends
	// nothing). Estimated is false when no stage estimated anything.
	EstimateUSD float64
	Estimated   bool
	// LimitUSD is the smallest max_cost_usd any stage returned (nil: no limit); LimitFrom is
	// the stage that returned it.
	LimitUSD  *float64
	LimitFrom string
}

// Money totals the plan's estimates for this process (a shard's, not the whole batch's).
func (p *Plan) Money() Money {
	var m Money
	for _, ip := range p.Instances {
		for _, sp := range ip.Stages {
			if sp.CostLimit != nil && (m.LimitUSD == nil || *sp.CostLimit < *m.LimitUSD) {
				limit := *sp.CostLimit
				m.LimitUSD, m.LimitFrom = &limit, sp.Address
			}
			if sp.Cost == nil || sp.Err != nil || !sp.Action.Changes() {
				continue
			}
			m.EstimateUSD += sp.Cost.USD
			m.Estimated = true
		}
	}
	m.EstimateUSD = roundUSD(m.EstimateUSD)
	return m
}

// roundUSD keeps a sum of float prices free of binary noise (0.0366 rather than 0.03660000001).
func roundUSD(usd float64) float64 { return math.Round(usd*1e6) / 1e6 }

// CostLimitError refuses a plan whose estimated cost exceeds max_cost_usd: no stage runs.
type CostLimitError struct {
	EstimateUSD, LimitUSD float64
	// From names the stage whose settings set the limit.
	From string
}

func (e *CostLimitError) Error() string {
	return fmt.Sprintf("the estimated cost of this plan, %s, exceeds max_cost_usd %s: nothing was started", pipeline.FormatUSD(e.EstimateUSD), pipeline.FormatUSD(e.LimitUSD))
}

// Code implements ExitCoder: a refusal (exit 3).
func (e *CostLimitError) Code() int { return ExitRefused }

// Diagnostic is the refusal as plan shows it: the figure, the limit and how to proceed.
func (e *CostLimitError) Diagnostic() *hcl.Diagnostic {
	return &hcl.Diagnostic{
		Severity: hcl.DiagError,
		Summary:  "Estimated cost over max_cost_usd",
		Detail: fmt.Sprintf("The paid work this plan would start is estimated at %s (see each stage's estimate), over max_cost_usd = %s "+
			"(the replicate block, as %s reads it). Nothing was started. To proceed, raise max_cost_usd on purpose, or run fewer subjects "+
			"in this process (-only KEY, or -shard I/N: the limit holds for each process).", pipeline.FormatUSD(e.EstimateUSD), pipeline.FormatUSD(e.LimitUSD), e.From),
	}
}

// OverBudget is a *CostLimitError when the plan's estimate exceeds its smallest cost limit.
func (p *Plan) OverBudget() *CostLimitError {
	m := p.Money()
	if m.LimitUSD == nil || m.EstimateUSD <= *m.LimitUSD {
		return nil
	}
	return &CostLimitError{EstimateUSD: m.EstimateUSD, LimitUSD: *m.LimitUSD, From: m.LimitFrom}
}

// costOf is the actual cost a stage reported from Apply (nil when it spent nothing we know of).
func costOf(res *pipeline.Result) *pipeline.Cost {
	if res == nil || res.Cost == nil {
		return nil
	}
	c := *res.Cost
	c.USD = roundUSD(c.USD)
	return &c
}
