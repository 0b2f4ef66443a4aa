package train

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/zclconf/go-cty/cty"

	"github.com/pipeline-dev/pipeline/pipeline"
	"github.com/pipeline-dev/pipeline/stages/lib/replicate"
)

// follow waits for the training to end through the client's watcher, which follows every
// training of the process together (one GET each, or listing them when there are many). While it
// runs on Replicate the stage holds no -parallelism slot (Recorder.Wait); it takes one back to
// finish. The stages watching it (a loss_gate with cancel_early) are consulted on every new look
// at its logs.
func (r *run) follow(ctx context.Context, t *replicate.Training) (*pipeline.Result, error) {
	done, err := r.req.Recorder.Wait(ctx)
	if err != nil {
		done()
		return nil, r.stop(ctx, err)
	}
	t, err = r.watch(ctx, t)
	done()
	if err != nil {
		return nil, err
	}
	r.rec.Status = t.Status
	r.measure(t)
	if err := r.save(); err != nil {
		return nil, err
	}
	return r.finish(t)
}

// watch follows t until it ends and returns it as it ended (with its final logs and metrics).
func (r *run) watch(ctx context.Context, t *replicate.Training) (*replicate.Training, error) {
	if ct, stop, err := r.look(ctx, t); err != nil || stop {
		return ct, err
	}
	w := r.c.WatchTraining(ctx, t, replicate.WatchOptions{
		Interval: r.cfg.Poll.Initial, MaxInterval: r.cfg.Poll.Max, Curve: len(r.req.Consultants) > 0,
	})
	defer w.Stop()
	for {
		u, ok := <-w.Updates()
		if !ok {
			return nil, r.stop(ctx, fmt.Errorf("following training %s: the watch ended without news; hint: run apply again to re-attach", t.ID))
		}
		if u.Err != nil {
			return nil, r.lost(ctx, t, u.Err)
		}
		t = u.Training
		if ct, stop, err := r.look(ctx, t); err != nil || stop {
			return ct, err
		}
	}
}

// look takes in what is known of the training now: progress, and the consultants' verdict.
// stop reports that the training ended (ct is how).
func (r *run) look(ctx context.Context, t *replicate.Training) (ct *replicate.Training, stop bool, err error) {
	prog := replicate.ParseLogs(t.Logs)
	r.rec.Status, r.rec.Step, r.rec.Total = t.Status, prog.Step, prog.Total
	r.progress(t, prog)
	if t.Terminal() {
		return t, true, nil
	}
	if r.rec.CanceledEarly {
		return nil, false, nil // cancelled already: waiting for the API to say so
	}
	ct, err = r.consult(ctx, t, prog)
	if err != nil || ct == nil {
		return nil, false, err
	}
	return ct, true, nil
}

// lost handles a watch that ended without the training ending: it vanished on Replicate (the
// next apply must not re-attach to it), the run was interrupted, or looks kept failing (the
// training runs on; the next apply re-attaches).
func (r *run) lost(ctx context.Context, t *replicate.Training, err error) error {
	if replicate.IsNotFound(err) {
		id := t.ID
		r.rec.TrainingID, r.rec.Intent, r.rec.Status = "", nil, ""
		if serr := r.save(); serr != nil {
			return serr
		}
		if serr := r.ledger(func(l *replicate.Ledger) { l.Finished(id) }); serr != nil {
			return serr
		}
		return fmt.Errorf("training %s vanished on Replicate while it was followed (%v); hint: run apply again to start a new one (the upload is reused)", id, err)
	}
	if ctx.Err() != nil {
		return r.stop(ctx, ctx.Err())
	}
	return r.stop(ctx, fmt.Errorf("following training %s: %w (%d looks failed in a row; the training keeps running: run apply again to re-attach)", t.ID, err, maxLookErrors))
}

// maxLookErrors is how many looks in a row may fail (after the client's own retries) before the
// watcher gives up waiting; the training keeps running and the next apply re-attaches.
const maxLookErrors = 5

// consult asks the stages watching this training whether to stop it; when one says so, the
// training is cancelled (on purpose: the only way a training is ever cancelled). It returns the
// cancelled training when the API already says it ended, else nil (the watch goes on to its end).
func (r *run) consult(ctx context.Context, t *replicate.Training, prog replicate.LogProgress) (*replicate.Training, error) {
	observed := cty.ObjectVal(map[string]cty.Value{
		"step": cty.NumberIntVal(int64(prog.Step)), "total": cty.NumberIntVal(int64(prog.Total)), "losses": lossMap(prog.Losses),
	})
	for _, c := range r.req.Consultants {
		stop, err := c.Consult(observed)
		if err != nil || stop == "" {
			continue // a consultant that cannot judge yet never stops a paid training
		}
		r.rec.CanceledEarly = true
		r.rec.CancelReason = fmt.Sprintf("%s (%s cancel_early)", stop, c.Address)
		if err := r.save(); err != nil {
			return nil, err
		}
		r.warns = append(r.warns, "cancelled training "+t.ID+" early: "+r.rec.CancelReason)
		ct, err := r.c.CancelTraining(ctx, t.ID)
		switch {
		case err != nil && ctx.Err() != nil:
			return nil, r.stop(ctx, ctx.Err())
		case err != nil:
			// The gate still refuses the finished training; only GPU time is lost.
			r.warns = append(r.warns, fmt.Sprintf("cancelling training %s failed (%v): following it to the end instead", t.ID, err))
		case ct != nil && ct.Terminal():
			if ct.Logs == "" {
				ct.Logs = t.Logs
			}
			return ct, nil
		}
		return nil, nil
	}
	return nil, nil
}

// progress reports one clean line: "training abc processing, step 47/1050, loss 0.779, ETA 2s";
// the figures go to Metrics for -json, not again into the message.
func (r *run) progress(t *replicate.Training, prog replicate.LogProgress) {
	p := pipeline.Progress{Current: int64(prog.Step), Total: int64(prog.Total), Metrics: map[string]float64{}}
	msg := fmt.Sprintf("training %s %s", t.ID, t.Status)
	if prog.Total > 0 {
		msg += fmt.Sprintf(", step %d/%d", prog.Step, prog.Total)
	}
	if sm := replicate.SmoothLosses(prog.Losses, 0, prog.Total); len(sm) > 0 {
		p.Metrics["loss"] = sm[len(sm)-1]
		p.Metrics["raw_loss"] = prog.Losses[len(prog.Losses)-1].Loss
		msg += fmt.Sprintf(", loss %.3f", sm[len(sm)-1])
	}
	if t.StartedAt != nil && prog.Step > 0 && prog.Total > prog.Step && !t.Terminal() {
		elapsed := r.now().Sub(*t.StartedAt)
		if elapsed > 0 {
			eta := time.Duration(float64(elapsed) / float64(prog.Step) * float64(prog.Total-prog.Step))
			p.Metrics["eta_seconds"] = eta.Seconds()
			msg += ", ETA " + eta.Round(time.Second).String()
		}
	}
	p.Message = msg
	r.req.Recorder.Progress(p)
}

// lossMap is a loss series as train's `losses` output: step (as a string key) → loss.
func lossMap(losses []replicate.LossPoint) cty.Value {
	if len(losses) == 0 {
		return cty.MapValEmpty(cty.Number)
	}
	m := make(map[string]cty.Value, len(losses))
	for _, l := range losses {
		m[strconv.Itoa(l.Step)] = cty.NumberFloatVal(l.Loss)
	}
	return cty.MapVal(m)
}
