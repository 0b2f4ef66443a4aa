package jpegscale

import (
	"errors"
	"fmt"
	"io"
)

// FormatError is a file that breaks the JPEG format.
type FormatError string

func (e FormatError) Error() string { return "jpegscale: invalid JPEG: " + string(e) }

// UnsupportedError is a valid JPEG that uses a feature this package does not decode, such as
// CMYK or 12-bit samples; image/jpeg reads some of them.
type UnsupportedError struct {
	Feature string
}

func (e UnsupportedError) Error() string { return "jpegscale: unsupported JPEG feature: " + e.Feature }

// ErrTooLarge is returned for a header over Options.MaxPixels, before anything is allocated.
var ErrTooLarge = errors.New("jpegscale: image larger than Options.MaxPixels")

// errTruncated is a file that ends before its last scan does: it wraps io.ErrUnexpectedEOF, as a
// cut-short copy is told apart from other damage by callers.
var errTruncated = fmt.Errorf("jpegscale: the data ends early: %w", io.ErrUnexpectedEOF)

func unsupported(format string, args ...any) error {
	return UnsupportedError{Feature: fmt.Sprintf(format, args...)}
}
