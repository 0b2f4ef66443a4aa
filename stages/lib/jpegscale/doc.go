// Package jpegscale decodes JPEG photos straight to 1/1, 1/2, 1/4 or 1/8 of their size, for
// callers that only need a small copy: image_check measures every photo at 1024 px, and a 12 MP
// phone photo decoded at 1/4 costs a fraction of a full decode. Every coefficient is still read,
// but each 8×8 block goes through a small inverse DCT (8×8, 4×4, 2×2 or its DC alone) and the
// full-size picture is never built. A reduced pixel is the mean of the full-size pixels it covers
// (up to rounding): the result is what a full decode followed by an area downscale gives.
//
//	cfg, err := jpegscale.DecodeConfig(bytes.NewReader(data))
//	if err != nil {
//		return err
//	}
//	img, err := jpegscale.Decode(data, jpegscale.Options{Scale: jpegscale.ScaleFor(cfg.Width, cfg.Height, 922)})
//	var unsupported jpegscale.UnsupportedError
//	if errors.As(err, &unsupported) {
//		img, err = jpeg.Decode(bytes.NewReader(data)) // CMYK and the other rare layouts
//	}
//
// It reads what cameras and phones write, as ITU-T T.81, JFIF and Adobe's APP14 define it:
// baseline, extended-sequential and progressive Huffman-coded JPEGs of 8-bit samples with 1 or 3
// components, chroma sampled 4:4:4, 4:2:2, 4:2:0, 4:4:0, 4:1:1 or 4:1:0, with or without restart
// intervals, YCbCr or RGB as APP14 (or the component names) say. The result is an *image.YCbCr,
// an *image.Gray or, for RGB files, an *image.RGBA. Anything else (4 components, 12-bit samples,
// arithmetic coding, lossless and hierarchical files, unusual sampling) is an UnsupportedError.
//
// Where a file is damaged it fails where image/jpeg fails (the fuzz test holds the two to the same
// verdicts), so a caller can switch between them without changing what it accepts.
package jpegscale
