// Package replicatetest is a Replicate API test server and the offline simulator behind
// `pipeline apply -simulate`. Like net/http/httptest it listens on 127.0.0.1, and it behaves like
// the real API on every path the stages use: bearer auth (401 otherwise), JSON errors
// {title, detail, status}, file upload (multipart field "content") whose urls.get serves the
// bytes, models (create: owner, name, visibility, hardware; 409 when it exists), versions with
// cursor pagination (absolute `next` URLs, newest first) and openapi_schema (trainer versions
// carry components.schemas.TrainingInput modelled on ostris/flux-dev-lora-trainer), version
// delete (202 empty body; refused with a detail for ForbidDelete and for the base of a training),
// trainings (destination must exist, input validated against the schema with 422, secrets shown
// as SecretMarker, starting → processing → succeeded|failed|canceled, ai-toolkit logs with tqdm
// bars redrawn with \r, output {version: "owner/name:id", weights: URL}, cancel; the list has no
// logs; metrics.predict_time once it ended) and predictions (output: image URLs it serves), 429
// with Retry-After and 5xx on demand, Replicate's rate limits (Options.RateLimits), 413 with an
// HTML page (as the API's proxy answers) for a request over 100 MiB, request counters and load
// accounting (Stats).
//
// Example:
//
//	srv := replicatetest.NewServer(replicatetest.Options{}) // PageSize 3; the API's is 100
//	defer srv.Close()
//	srv.AddModel("acme", "ana-lora", 4)          // four older versions
//	srv.RateLimit("GET", "/v1/trainings", 1, 3)  // three 429s with Retry-After: 1
//	c, _ := replicate.New(srv.URL(), srv.Token())
//	t, _ := c.CreateTraining(ctx, replicatetest.Trainer, "acme/ana-lora", input)
//	// ... GET it until t.Terminal(); then:
//	_ = srv.Count("created training") // 1
//
// Time. With Options.Auto false (tests) a training advances one step per GET of it: GET 1
// processing at step 0, GETs 2–6 at 20%..100% of its steps, GET 7 succeeded (the new version is
// added to the destination then); a prediction is processing on GET 1 and done on GET 2. Nothing
// sleeps, and a list (GET /v1/trainings) advances nothing: follow more than 20 trainings (the
// client then lists) in Auto mode. With Auto true (the simulator) they advance with time: a
// training takes ~2.1 s (starting 0.3 s), a prediction 0.6 s, or Options.TrainingTime and
// PredictionTime (a tenth of a training is starting); finished trainings create their versions
// even when nobody polls them, at the time they ended.
//
// Virtual time. Options.Clock sets the server's time. A *Clock shared with the client
// (replicate.WithTime(clk)) puts the server's trainings, its rate limits and the client's pacer
// and watcher in the same time: NewClock(start, N) runs N times faster than wall time (a batch
// benchmark: wall time is T/N plus the local work), NewSteppedClock is a discrete-event clock
// that moves on only when every member (Join, the client's watcher, requests sent through
// clk.Transport) sleeps, so accounting is exact and tests take no wall time.
//
// Load. Options.RateLimits (off by default) enforces Replicate's limits over a sliding minute:
// 600 prediction creates, 3,000 other requests; over them 429 with Retry-After and
// {"detail": "Request was throttled. Your rate limit resets in ~Ns."}, not processed. Stats has
// the peak requests per minute (all, creates, others), the 429s the limits sent and the most
// trainings in flight at once; UploadContentLengths the Content-Length of each upload.
//
// Loss model. The logged loss (Loss) decays from ~0.85 with a time constant of 250 steps towards
// a floor of 0.30, plus deterministic noise (±0.015) seeded by the input. Overfit(input) is 0 for
// the research defaults (lora_rank 16, steps ≤ 1200, learning_rate 4e-4: final loss ~0.30) and ≥ 1
// for lora_rank ≥ 32, steps ≥ 1400 or learning_rate ≥ 8e-4 (FinalLoss < 0.2: overfit); rank and
// learning rate lower the floor from the start, steps only past step 1150 (so a 2000-step run
// crosses 0.2 near step 1400 and cancel_early saves the rest). Short trainings (a few hundred
// steps) end well above the floor (underfit).
//
// Images. A prediction's outputs are OutputSize² images (PNG when output_format is "png", else
// JPEG: Go has no WebP encoder) made from a photo of the training's uploaded zip (the seed picks
// which; versions not made by a training use the model's latest training's photos), with skin
// smoothed edge-preservingly by Smoothing(): 0 for natural versions at guidance ≤ 3.5, growing with
// Overfit and with guidance_scale above 3.5 (the "plastic skin" the generate stage measures). A
// procedural face stands in when no photo decodes.
//
// Failure knobs (deterministic, from the input):
//   - training trigger_word "FAIL": fails at 40% with a CUDA out-of-memory error in logs and error;
//   - training trigger_word "SLOW" (Auto mode): runs five times longer (to test cancel/interrupt);
//   - training input_images not a file this server holds: fails on start ("Could not download");
//   - training destination missing: 404 "The specified training destination does not exist";
//   - training input unknown or out of the schema's bounds: 422 "Input validation failed";
//   - prediction prompt containing "FAIL": fails (NSFW error);
//   - Fail / RateLimit: 5xx / 429 without processing; FailAfter / Drop: processed, then a 5xx or
//     a dropped connection (the "maybe created" case); ForbidDelete: version delete refused;
//   - RemovePredictionData (and any prediction finished over an hour ago): data_removed true,
//     input {}, output null, no logs, delivery URLs 404, as the API does for API predictions.
//   - Abort: a training or prediction ends "aborted" (terminated before it ran; no output).
//   - RateLimitInBody: 429 whose wait is only in the JSON body's retry_after (no header).
//   - EchoDefaults: created trainings/predictions show their input with the schema's defaults added.
//   - SetVersionSchema: a version shows another openapi_schema (null, LegacyTrainerSchema, junk).
//   - DeleteDelay(n): version deletes are asynchronous, still listed for n more list calls.
//   - RemoveTraining: a training disappears (404).
//   - ReserveModelName: a deleted model's name: GET 404, create 409.
//   - FailWithDetail: an error whose detail is any JSON value (a validation list, an object).
//   - Stall: requests wait before they are processed (not processed if the client gives up).
//
// Persistence. With Options.WorldFile the world (models, versions, trainings, predictions, file
// metadata; file bytes in WORLDFILE.blobs/) is loaded at start and saved atomically after every
// mutation, so a second simulated apply finds what the first one made. Simulate starts that.
package replicatetest
