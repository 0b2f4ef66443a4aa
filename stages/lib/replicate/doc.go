// Package replicate is the Replicate API client the remote stage kinds (train, loss_gate,
// generate, prune) share. It wraps github.com/replicate/replicate-go v0.26.0 and fixes what that
// client gets wrong for a pipeline that must never pay twice:
//
//   - pagination follows absolute `next` links itself (replicate-go's Paginate breaks on page 2);
//   - 429 is retried for every method honouring Retry-After (a pause shared by all requests of the
//     Client); 5xx and dropped connections are retried with jittered backoff only for GETs and for
//     requests whose repetition is harmless (file upload, cancel, version delete). A create of a
//     training or prediction that got a 5xx or no answer returns *MaybeCreatedError: reconcile with
//     FindTraining / FindPrediction before creating again;
//   - trainings get the uploaded file's urls.get, the new version is read from output.version;
//   - progress and loss come from ParseLogs (tqdm bars redrawn with \r);
//   - errors are *APIError (status, title, detail) with a hint, and never contain the token.
//
// Example:
//
//	c, err := replicate.FromEnv(req.Env) // REPLICATE_API_TOKEN, REPLICATE_BASE_URL
//	if err != nil {
//		return nil, err // *MissingTokenError says "set REPLICATE_API_TOKEN or use -simulate"
//	}
//	f, _ := c.UploadFile(ctx, "images.zip", zipBytes, "application/zip")
//	t, err := c.CreateTraining(ctx, "ostris/flux-dev-lora-trainer:abc", "acme/ana-lora",
//		map[string]any{"input_images": f.URL, "steps": 1000})
//	if replicate.IsMaybeCreated(err) {
//		t, err = c.FindTraining(ctx, "abc", input, intentTime)
//	}
//	poll := replicate.Poller{Initial: 5 * time.Second, Max: time.Minute}
//	for !t.Terminal() {
//		time.Sleep(poll.Next())
//		t, err = c.GetTraining(ctx, t.ID)
//		prog := replicate.ParseLogs(t.Logs) // prog.Step, prog.Total, prog.Losses
//	}
//
// Beyond the shared contract (/work/team/REPLICATE_API.md) the package offers: Install (put a
// client into an Env, for tests and the simulator), IsUnauthorized, MaybeCreatedError /
// IsMaybeCreated, SecretMarker (the API shows secret inputs as "**********"; FindTraining and
// FindPrediction let such keys match any value), ClockSkew (how much earlier than `after` a
// created_at may be and still match), SplitVersion, the options WithSleep / WithClock so tests
// never really wait on a Retry-After, and WithTimeouts (a per-attempt timeout; uploads get more
// time the larger they are and are given up after three timeouts).
//
// The test server and offline simulator live in package replicatetest.
package replicate
