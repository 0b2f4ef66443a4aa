// Package lib holds the libraries the stage kinds share; it has no code of its own. Each kind
// lives in its own package directly under stages/ (imagecheck, params, train, lossgate,
// generate, prune) and is registered in cmd/pipeline; nothing under stages/lib is a kind:
//
//   - replicate: the Replicate API client every remote kind uses (pacing, retries, pagination,
//     paid jobs created exactly once), and replicate/replicatetest, its test server, which is
//     also the offline simulator behind -simulate;
//   - skin: face detection and the skin-texture figures of the plastic-skin guard;
//   - photo: reading phone photos (JPEG, PNG, WebP, HEIC, AVIF by content), orientation, colour,
//     and the prepared copies and streamed zip a trainer gets;
//   - photosource: a subject's photos from a local directory or a bucket prefix, with
//     photosource/s3test, an S3 emulator for tests.
package lib
