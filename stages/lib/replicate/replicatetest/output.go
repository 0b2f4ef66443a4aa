package replicatetest

import (
	"archive/tar"
	"bytes"
	"image"
	"time"
)

// outputImage renders (once) output idx of a succeeded prediction. Called with s.mu held; it
// releases the lock while decoding and rendering, which take a fraction of a second.
func (s *Server) outputImage(p *predictionRec, idx int) ([]byte, string, error) {
	format := str(p.Input["output_format"])
	key := p.ID + "/" + itoa(idx)
	if b, ok := s.images[key]; ok {
		return b, contentType(format), nil
	}
	trainingInput, fileID := s.trainingFor(p.Version)
	zipData := s.w.data[fileID]
	guidance := num(p.Input, "guidance_scale", 3)
	loraScale := num(p.Input, "lora_scale", 1)
	seed := int64(num(p.Input, "seed", 0)) + int64(idx)

	s.mu.Unlock()
	var photo image.Image
	if zipData != nil {
		if filled := s.photos.photo(fileID, zipData, seed); filled != nil {
			photo = filled
		}
	}
	img := render(photo, seed, Smoothing(trainingInput, guidance, loraScale))
	data, ct, err := encode(img, format)
	s.mu.Lock()

	if err != nil {
		return nil, "", err
	}
	if len(s.images) >= 64 { // bound memory in a long simulated run; re-rendering is deterministic
		s.images = map[string][]byte{}
	}
	s.images[key] = data
	return data, ct, nil
}

func contentType(format string) string {
	if format == "png" {
		return "image/png"
	}
	return "image/jpeg"
}

func itoa(i int) string {
	const digits = "0123456789"
	if i == 0 {
		return "0"
	}
	var b []byte
	for ; i > 0; i /= 10 {
		b = append([]byte{digits[i%10]}, b...)
	}
	return string(b)
}

// trainingFor finds the training behind a version: the one that produced it, else the newest
// succeeded training into the same model (its photos stand in for versions made elsewhere).
// It returns that training's input (nil when none: a natural version) and its zip's file id.
func (s *Server) trainingFor(versionID string) (map[string]any, string) {
	m, v := s.w.findVersion(versionID)
	if m == nil {
		return nil, ""
	}
	var t *trainingRec
	if v.TrainingID != "" {
		t = s.w.training(v.TrainingID)
	}
	if t == nil {
		var photosOnly *trainingRec
		for _, x := range s.w.Trainings {
			if x.Destination == m.Owner+"/"+m.Name && x.Status == "succeeded" {
				photosOnly = x
			}
		}
		if photosOnly == nil {
			return nil, ""
		}
		return nil, s.fileIDFromURL(str(photosOnly.Input["input_images"]))
	}
	return t.Input, s.fileIDFromURL(str(t.Input["input_images"]))
}

// weightsTar is the trained_model.tar a training outputs: a small stand-in LoRA file.
func weightsTar(t *trainingRec) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	content := []byte("simulated LoRA weights for training " + t.ID + "\n")
	mod := time.Unix(0, 0)
	if t.CompletedAt != nil {
		mod = *t.CompletedAt
	}
	_ = tw.WriteHeader(&tar.Header{Name: "output/flux_train_replicate/lora.safetensors", Mode: 0o644, Size: int64(len(content)), ModTime: mod})
	_, _ = tw.Write(content)
	_ = tw.Close()
	return buf.Bytes()
}
