// Package replicate is the Replicate API client the remote stage kinds (train, loss_gate,
// generate, prune) share. It wraps github.com/replicate/replicate-go v0.26.0 and fixes what that
// client gets wrong for a pipeline that must never pay twice and runs batches of thousands:
//
//   - pagination follows absolute `next` links itself (replicate-go's Paginate breaks on page 2);
//   - 429 is retried for every method honouring Retry-After (header, body retry_after, or the
//     detail's "resets in ~30s"); 5xx and dropped connections are retried with jittered backoff
//     only for GETs and for requests whose repetition is harmless (file upload, cancel, version
//     delete). A create of a training or prediction that got a 5xx or no answer returns
//     *MaybeCreatedError: reconcile with FindTraining / FindPrediction before creating again;
//   - trainings get the uploaded file's urls.get, the new version is read from output.version;
//   - progress and loss come from ParseLogs (tqdm bars redrawn with \r);
//   - errors are *APIError (status, title, detail) with a hint, and never contain the token.
//
// One Client per process. FromEnv creates it once per pipeline.Env (REPLICATE_API_TOKEN,
// REPLICATE_BASE_URL, Env.Cache) and every stage gets the same one, so they share:
//
//   - one request budget (pacer.go): prediction creates (POST .../predictions) at most 540 a
//     minute, every other API request 2,400 (DefaultRateLimits; Replicate allows 600 and 3,000),
//     each a token bucket with a burst of one second's worth, so 1,000 callers starting at once
//     leave in order instead of at t=0. A 429 pauses every caller until its Retry-After, moves
//     booked slots behind the pause and halves the rate for two minutes. WithRateLimits changes
//     the budget; Stats counts requests per kind, 429s and time waited;
//   - one watcher (watch.go) that follows trainings for all callers; see WatchTraining below;
//   - one memo of trainer schemas (schema.go): a version's openapi_schema is immutable, so
//     TrainerInputs reads it once per process (concurrent callers share the request) and keeps
//     it in the pipeline.Cache under SchemaCacheKey, so another process or CI runner reads none;
//     CachedTrainerInputs reads only memo and cache (plan -refresh=false: no request at all).
//
// Following a training. A stage hands the training to the watcher and only waits; it holds
// nothing else (no -parallelism slot, no request of its own):
//
//	w := c.WatchTraining(ctx, t, replicate.WatchOptions{Interval: poll, Curve: cancelEarly})
//	defer w.Stop()
//	for u := range w.Updates() { // closed after the last update
//		if u.Err != nil {
//			// replicate.IsNotFound(u.Err): the training vanished on Replicate (say so; do not
//			// re-attach). ctx's error: interrupted. Else looks failed five times in a row: the
//			// training runs on; the next apply re-attaches.
//		}
//		prog := replicate.ParseLogs(u.Training.Logs) // u.Fresh: logs read just now
//		if u.Training.Terminal() { /* final logs, output.version, PredictTime */ }
//	}
//
// With ListThreshold (20) or fewer trainings followed, each is read by its own GET on its
// backing-off schedule (Interval, growing by half to MaxInterval while nothing changes). With
// more, their statuses come from GET /v1/trainings, newest first, paged down only until the
// oldest followed training's created_at; a training's own GET (logs: progress, loss) is read when
// the list shows it ended (the final update carries the final logs and metrics), when it is
// missing from the list (a 404 then ends its watch), and while it runs every ProgressInterval (5
// minutes), or at every look for Curve ones (loss_gate cancel_early), within a quarter of the
// budget. A 429 only delays a look; it never counts as a failed one. Updates never block the
// watcher: an unread update is replaced by a newer one.
//
// Uploads. UploadStream writes the multipart/form-data request (field "content") around a reader
// with an exact Content-Length, opening the content again for each attempt, so a zip is never
// held in memory. The files API takes at most MaxUploadBytes (100 MiB) per request; a bigger one
// is refused before anything is sent (*UploadTooLargeError; CheckUploadSize lets plan refuse by
// the same rule). UploadFile([]byte) goes the same way.
//
// Money. PriceTable is the built-in USD-per-second table from replicate.com/pricing with the
// config's `prices` on top; Training.PredictTime and Prediction.PredictTime are
// metrics.predict_time, and their Cost(prices, hardware) is what Replicate bills. Estimates
// without an earlier job use SPEC's defaults: TrainingSeconds (1.3 s per step plus 90 s of setup
// on DefaultTrainingHardware, gpu-h100) and DefaultPredictionSeconds (8 s).
//
// Example:
//
//	c, err := replicate.FromEnv(req.Env)
//	if err != nil {
//		return nil, err // *MissingTokenError says "set REPLICATE_API_TOKEN or use -simulate"
//	}
//	f, _ := c.UploadStream(ctx, "images.zip", "application/zip", size, openZip)
//	t, err := c.CreateTraining(ctx, "ostris/flux-dev-lora-trainer:abc", "acme/ana-lora",
//		map[string]any{"input_images": f.URL, "steps": 1000})
//	if replicate.IsMaybeCreated(err) {
//		t, err = c.FindTraining(ctx, "abc", input, intentTime)
//	}
//	// ... follow it with WatchTraining as above.
//
// Paid creates go through CreateOnce (once.go: intent recorded first, a create without a clear
// answer reconciled by listing before it is repeated; WithCreateRetry). A subject's versions are
// kept in its Ledger (ledger.go), shared by the kinds through the state; Settings (settings.go)
// is the replicate block; SmoothLosses (loss.go) the gate's loss smoothing.
//
// Also: Install (put a client into an Env, for tests and the simulator), IsUnauthorized,
// IsRateLimited, SecretMarker (the API shows secret inputs as "**********"; FindTraining and
// FindPrediction let such keys match any value), ClockSkew (how much earlier than `after` a
// created_at may be and still match), SplitVersion, Poller, Sleep, WithTimeouts (a per-attempt
// timeout; uploads get more time the larger they are and are given up after three timeouts), and
// for tests and benchmarks WithTime (a clock shared with the test server, replicatetest.Clock),
// or WithSleep / WithClock so tests never really wait.
//
// The test server and offline simulator live in package replicatetest.
package replicate
