package peer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
)

// Wire format of a frame:
//
//	+------+----------------+-------------------+
//	| kind | length (4, BE) | payload (length)  |
//	+------+----------------+-------------------+
//
// The kind says how to read the payload; the RPC layer uses FrameOK and
// FrameError, and streaming protocols may define more kinds. A length prefix
// (rather than, say, a varint or a delimiter) lets the reader reject an
// oversized frame from the first five bytes, before it allocates.
const (
	// FrameOK marks a request or a successful response; the payload is the
	// message.
	FrameOK byte = 0
	// FrameError marks an error response; the payload is the error text.
	FrameError byte = 1

	// FrameHeaderSize is the size of a frame's header (kind + length).
	FrameHeaderSize = 5

	// DefaultMaxMessageSize is the default cap on one frame's payload.
	DefaultMaxMessageSize = 16 << 20

	// readChunk is the largest buffer ReadFrame allocates ahead of the data
	// that has actually arrived, so that a header claiming a large payload
	// costs the sender as many bytes as it costs the receiver.
	readChunk = 64 << 10

	// coalesceLimit is the largest payload WriteFrame copies so that header
	// and payload go out in one write (one yamux data frame).
	coalesceLimit = 32 << 10
)

// WriteFrame writes one frame of the given kind. Payloads up to 32 KiB are
// written with a single Write call. It returns ErrTooLarge (writing nothing)
// if the payload's length does not fit in 32 bits; enforcing a smaller limit
// is the caller's business.
func WriteFrame(w io.Writer, kind byte, payload []byte) error {
	if uint64(len(payload)) > math.MaxUint32 {
		return fmt.Errorf("%w: %d bytes", ErrTooLarge, len(payload))
	}
	var hdr [FrameHeaderSize]byte
	hdr[0] = kind
	binary.BigEndian.PutUint32(hdr[1:], uint32(len(payload)))
	if len(payload) <= coalesceLimit {
		buf := make([]byte, 0, FrameHeaderSize+len(payload))
		buf = append(append(buf, hdr[:]...), payload...)
		if _, err := w.Write(buf); err != nil {
			return fmt.Errorf("peer: write frame: %w", err)
		}
		return nil
	}
	if _, err := w.Write(hdr[:]); err != nil {
		return fmt.Errorf("peer: write frame: %w", err)
	}
	if _, err := w.Write(payload); err != nil {
		return fmt.Errorf("peer: write frame: %w", err)
	}
	return nil
}

// ReadFrame reads one frame whose payload is at most limit bytes (limit <= 0
// means DefaultMaxMessageSize). It returns the frame's kind without judging
// it; callers check it against what their protocol allows.
//
// Errors:
//   - io.EOF, unwrapped, if r ended cleanly before the first byte (the end of
//     a stream of frames);
//   - an error wrapping io.ErrUnexpectedEOF if r ended inside the frame;
//   - an error wrapping ErrTooLarge if the header announces more than limit
//     bytes; nothing beyond the header has been read or allocated then;
//   - r's own error, wrapped.
//
// ReadFrame allocates the payload as it arrives (at most 64 KiB ahead of the
// data), so a peer cannot make it allocate limit bytes by sending a header.
func ReadFrame(r io.Reader, limit int) (kind byte, payload []byte, err error) {
	if limit <= 0 {
		limit = DefaultMaxMessageSize
	}
	var hdr [FrameHeaderSize]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		if errors.Is(err, io.EOF) {
			return 0, nil, io.EOF
		}
		return 0, nil, fmt.Errorf("peer: read frame header: %w", err)
	}
	kind = hdr[0]
	n := binary.BigEndian.Uint32(hdr[1:])
	if uint64(n) > uint64(limit) {
		return 0, nil, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, n, limit)
	}
	size := int(n)
	payload = make([]byte, 0, min(size, readChunk))
	for len(payload) < size {
		if len(payload) == cap(payload) {
			// Double what has arrived, never past the announced size.
			payload = slices.Grow(payload, min(size-len(payload), len(payload)))
		}
		start, end := len(payload), min(cap(payload), size)
		payload = payload[:end]
		if _, err := io.ReadFull(r, payload[start:end]); err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return 0, nil, fmt.Errorf("peer: read frame payload (%d of %d bytes): %w", start, size, err)
		}
	}
	return kind, payload, nil
}
