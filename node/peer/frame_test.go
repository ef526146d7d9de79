package peer

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"runtime"
	"testing"

	"pgregory.net/rapid"
)

// frame builds the bytes of a frame by hand, independently of WriteFrame.
func frame(kind byte, payload []byte) []byte {
	b := []byte{kind, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(b[1:], uint32(len(payload)))
	return append(b, payload...)
}

func TestFrameRoundTrip(t *testing.T) {
	tests := []struct {
		name    string
		kind    byte
		payload []byte
	}{
		{"empty ok", FrameOK, nil},
		{"error text", FrameError, []byte("no such service")},
		{"other kind", 42, []byte{0, 1, 2}},
		{"at coalesce limit", FrameOK, bytes.Repeat([]byte{1}, coalesceLimit)},
		{"over coalesce limit", FrameOK, bytes.Repeat([]byte{2}, coalesceLimit+1)},
		{"several read chunks", FrameOK, bytes.Repeat([]byte{3}, 5*readChunk+7)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := WriteFrame(&buf, tt.kind, tt.payload); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(buf.Bytes(), frame(tt.kind, tt.payload)) {
				t.Fatal("encoding differs from the documented layout")
			}
			kind, payload, err := ReadFrame(&buf, len(tt.payload))
			if err != nil {
				t.Fatal(err)
			}
			if kind != tt.kind || !bytes.Equal(payload, tt.payload) {
				t.Fatalf("got kind %d, %d bytes; want kind %d, %d bytes", kind, len(payload), tt.kind, len(tt.payload))
			}
			if _, _, err := ReadFrame(&buf, 0); err != io.EOF {
				t.Fatalf("after the last frame: %v, want io.EOF", err)
			}
		})
	}
}

func TestReadFrameErrors(t *testing.T) {
	tests := []struct {
		name  string
		in    []byte
		limit int
		want  error
	}{
		{"empty input", nil, 100, io.EOF},
		{"partial header", []byte{0, 0, 0}, 100, io.ErrUnexpectedEOF},
		{"header only", []byte{0, 0, 0, 0, 3}, 100, io.ErrUnexpectedEOF},
		{"partial payload", []byte{0, 0, 0, 0, 3, 'a', 'b'}, 100, io.ErrUnexpectedEOF},
		{"one over the limit", frame(0, make([]byte, 101)), 100, ErrTooLarge},
		{"max length", []byte{0, 0xff, 0xff, 0xff, 0xff}, 0, ErrTooLarge},
		{"default limit", frame(0, make([]byte, 10))[:5:5], -1, io.ErrUnexpectedEOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, payload, err := ReadFrame(bytes.NewReader(tt.in), tt.limit)
			if !errors.Is(err, tt.want) {
				t.Fatalf("error %v, want %v", err, tt.want)
			}
			if payload != nil {
				t.Fatalf("payload %q returned with an error", payload)
			}
		})
	}
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

// allocated returns the bytes allocated while f runs.
func allocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

func TestReadFrameDoesNotTrustLength(t *testing.T) {
	t.Run("oversized rejected after the header", func(t *testing.T) {
		// Announces 4 GiB - 1 and sends 1 MiB; the limit is 1 GiB.
		in := append([]byte{0, 0xff, 0xff, 0xff, 0xff}, make([]byte, 1<<20)...)
		cr := &countingReader{r: bytes.NewReader(in)}
		var err error
		n := allocated(func() { _, _, err = ReadFrame(cr, 1<<30) })
		if !errors.Is(err, ErrTooLarge) {
			t.Fatalf("error %v, want ErrTooLarge", err)
		}
		if cr.n != FrameHeaderSize {
			t.Fatalf("read %d bytes, want only the %d-byte header", cr.n, FrameHeaderSize)
		}
		if n > 4<<10 {
			t.Fatalf("allocated %d bytes for a rejected frame", n)
		}
	})
	t.Run("allowed but truncated", func(t *testing.T) {
		// Announces 1 GiB (within the limit) and sends 10 bytes.
		in := append([]byte{0, 0x40, 0, 0, 0}, make([]byte, 10)...)
		var err error
		n := allocated(func() { _, _, err = ReadFrame(bytes.NewReader(in), 1<<30) })
		if !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("error %v, want ErrUnexpectedEOF", err)
		}
		if n > 2*readChunk {
			t.Fatalf("allocated %d bytes for 10 bytes of payload", n)
		}
	})
}

// failWriter fails every write.
type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, io.ErrClosedPipe }

func TestWriteFrameError(t *testing.T) {
	for _, size := range []int{0, coalesceLimit + 1} {
		if err := WriteFrame(failWriter{}, FrameOK, make([]byte, size)); !errors.Is(err, io.ErrClosedPipe) {
			t.Fatalf("size %d: error %v, want the writer's", size, err)
		}
	}
}

// TestFrameStreamProperty: any sequence of frames written back to back reads
// back the same, and ReadFrame accepts a frame iff it fits the limit.
func TestFrameStreamProperty(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		kinds := rapid.SliceOfN(rapid.Byte(), 0, 8).Draw(t, "kinds")
		payloads := make([][]byte, len(kinds))
		var buf bytes.Buffer
		for i, k := range kinds {
			payloads[i] = rapid.SliceOfN(rapid.Byte(), 0, 3*readChunk).Draw(t, "payload")
			if err := WriteFrame(&buf, k, payloads[i]); err != nil {
				t.Fatal(err)
			}
		}
		limit := rapid.IntRange(1, 3*readChunk).Draw(t, "limit")
		for i, k := range kinds {
			kind, payload, err := ReadFrame(&buf, limit)
			if len(payloads[i]) > limit {
				if !errors.Is(err, ErrTooLarge) {
					t.Fatalf("frame %d of %d bytes over limit %d: %v", i, len(payloads[i]), limit, err)
				}
				return // the stream is unusable after a rejected frame
			}
			if err != nil {
				t.Fatalf("frame %d: %v", i, err)
			}
			if kind != k || !bytes.Equal(payload, payloads[i]) {
				t.Fatalf("frame %d differs", i)
			}
		}
		if _, _, err := ReadFrame(&buf, limit); err != io.EOF {
			t.Fatalf("after the last frame: %v, want io.EOF", err)
		}
	})
}

// FuzzReadFrame feeds arbitrary bytes to ReadFrame: it must never panic,
// never return more than the limit, and whatever it accepts must be exactly
// the prefix of the input that WriteFrame would produce.
func FuzzReadFrame(f *testing.F) {
	f.Add([]byte{}, 16)
	f.Add([]byte{0, 0, 0}, 16)
	f.Add(frame(FrameOK, []byte("hello")), 16)
	f.Add(frame(FrameError, []byte("boom")), 4)
	f.Add(frame(FrameOK, []byte("too long")), 4)
	f.Add([]byte{0, 0xff, 0xff, 0xff, 0xff, 1, 2, 3}, 1<<20)
	f.Add(append(frame(7, nil), frame(0, []byte("second"))...), 16)
	f.Add(frame(FrameOK, make([]byte, readChunk+1)), 2*readChunk)
	f.Fuzz(func(t *testing.T, in []byte, limit int) {
		cr := &countingReader{r: bytes.NewReader(in)}
		kind, payload, err := ReadFrame(cr, limit)
		if err != nil {
			if payload != nil {
				t.Fatal("payload returned with an error")
			}
			return
		}
		effective := limit
		if effective <= 0 {
			effective = DefaultMaxMessageSize
		}
		if len(payload) > effective {
			t.Fatalf("payload of %d bytes over limit %d", len(payload), effective)
		}
		var re bytes.Buffer
		if err := WriteFrame(&re, kind, payload); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(re.Bytes(), in[:cr.n]) {
			t.Fatal("re-encoding differs from the bytes consumed")
		}
	})
}
