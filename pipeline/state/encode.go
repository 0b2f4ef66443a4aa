package state

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
)

// compactInstance is an instance as one line of JSON: no indentation (embedded values stay as
// compact as they were stored), no HTML escaping, empty fields omitted by the struct tags.
func compactInstance(in *Instance) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(in); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// encodeInstanceFile is what a per-instance state file holds: the compact JSON, one line, that
// people can read with any JSON tool (a 50-photo subject is well under 16 KB: image_check's
// per-photo figures stay in the cache, not in state).
func encodeInstanceFile(in *Instance) ([]byte, error) {
	return compactInstance(in)
}

// isGzip reports whether data starts with the gzip magic number.
func isGzip(data []byte) bool { return len(data) >= 2 && data[0] == 0x1f && data[1] == 0x8b }

// decodeInstanceFile reads a per-instance file: plain JSON, or gzip-compressed JSON (what the
// first per-instance release wrote for a while).
func decodeInstanceFile(data []byte) (*Instance, error) {
	if isGzip(data) {
		zr, err := gzip.NewReader(bytes.NewReader(data))
		if err != nil {
			return nil, err
		}
		js, err := io.ReadAll(zr)
		if err != nil {
			return nil, fmt.Errorf("decompressing: %w", err)
		}
		data = js
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, fmt.Errorf("the file is empty")
	}
	var in Instance
	if err := json.Unmarshal(data, &in); err != nil {
		return nil, err
	}
	in.compactRaw()
	return &in, nil
}
