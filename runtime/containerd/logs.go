package containerd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/containerd/containerd/errdefs"
)

// followInterval is how often a followed log is polled for new output.
const followInterval = 200 * time.Millisecond

// logPath is the current log file of container id.
func (d *Driver) logPath(id string) string { return filepath.Join(d.logDir, id+".log") }

// removeLogs removes the log files of container id.
func (d *Driver) removeLogs(id string) {
	for _, p := range []string{d.logPath(id), d.logPath(id) + ".1"} {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			d.log.Warn("remove log", "path", p, "err", err)
		}
	}
}

// rotateLoop rotates oversized logs every LogCheckInterval until Close.
func (d *Driver) rotateLoop() {
	defer d.wg.Done()
	t := time.NewTicker(d.cfg.LogCheckInterval)
	defer t.Stop()
	for {
		select {
		case <-d.stop:
			return
		case <-t.C:
			d.rotateLogs()
		}
	}
}

// rotateLogs copy-truncates every log above LogMaxBytes into <id>.log.1.
// The shim keeps the file open with O_APPEND, so after the truncate it
// writes from the start again.
func (d *Driver) rotateLogs() {
	paths, _ := filepath.Glob(filepath.Join(d.logDir, "*.log"))
	for _, p := range paths {
		st, err := os.Stat(p)
		if err != nil || st.Size() <= d.cfg.LogMaxBytes {
			continue
		}
		if err := rotate(p); err != nil {
			d.log.Warn("rotate log", "path", p, "err", err)
		}
	}
}

// rotate copies the file at p to p.1 (atomically replacing it) and
// truncates p.
func rotate(p string) error {
	src, err := os.Open(p)
	if err != nil {
		return err
	}
	defer src.Close()
	tmp, err := os.CreateTemp(filepath.Dir(p), filepath.Base(p)+".tmp*")
	if err != nil {
		return err
	}
	if _, err := io.Copy(tmp, src); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return err
	}
	if err := tmp.Close(); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	if err := os.Rename(tmp.Name(), p+".1"); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	return os.Truncate(p, 0)
}

// Logs returns the container's output: the last tail lines (tail < 0:
// everything kept, rotated file included), then with follow the lines
// written later, until ctx ends, the reader is closed or the container is
// removed. A missing container wraps runtime.ErrNotFound.
func (d *Driver) Logs(ctx context.Context, id string, tail int, follow bool) (io.ReadCloser, error) {
	nctx := d.nsCtx(ctx)
	if _, err := d.client.LoadContainer(nctx, id); err != nil {
		return nil, classify(err, "logs %s", id)
	}
	path := d.logPath(id)
	old, err := readFile(path + ".1")
	if err != nil {
		return nil, fmt.Errorf("containerd: logs %s: %w", id, err)
	}
	cur, err := readFile(path)
	if err != nil {
		return nil, fmt.Errorf("containerd: logs %s: %w", id, err)
	}
	head := lastLines(append(old, cur...), tail)
	if !follow {
		return io.NopCloser(bytes.NewReader(head)), nil
	}
	pr, pw := io.Pipe()
	f := &follower{PipeReader: pr, done: make(chan struct{})}
	go func() {
		err := d.follow(ctx, id, path, int64(len(cur)), head, pw, f.done)
		pw.CloseWithError(err)
	}()
	return f, nil
}

// follower is the reader Logs returns when following.
type follower struct {
	*io.PipeReader
	once sync.Once
	done chan struct{} // closed by Close
}

// Close ends the follow.
func (f *follower) Close() error {
	f.once.Do(func() { close(f.done) })
	return f.PipeReader.Close()
}

// follow writes head, then whatever is appended to the log at path from
// offset on, polling, until ctx ends, done is closed or the container is
// gone (nil error: the reader sees EOF).
func (d *Driver) follow(ctx context.Context, id, path string, offset int64, head []byte, w io.Writer, done <-chan struct{}) error {
	if _, err := w.Write(head); err != nil {
		return err
	}
	t := time.NewTicker(followInterval)
	defer t.Stop()
	nctx := d.nsCtx(ctx)
	for {
		gone := false
		if _, err := d.client.LoadContainer(nctx, id); errdefs.IsNotFound(err) {
			gone = true
		}
		var err error
		offset, err = copyNew(path, offset, w)
		if err != nil || gone {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-done:
			return nil
		case <-t.C:
		}
	}
}

// copyNew writes what the log at path holds beyond offset and returns the
// new offset. When the file shrank it was rotated: the rest of the old
// content is read from path.1 first.
func copyNew(path string, offset int64, w io.Writer) (int64, error) {
	st, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return offset, nil
	}
	if err != nil {
		return offset, err
	}
	if st.Size() < offset {
		if _, err := copyRange(path+".1", offset, w); err != nil {
			return 0, err
		}
		offset = 0
	}
	return copyRange(path, offset, w)
}

// copyRange writes the file at path from offset to its end and returns
// the offset reached.
func copyRange(path string, offset int64, w io.Writer) (int64, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return offset, nil
	}
	if err != nil {
		return offset, err
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return offset, err
	}
	n, err := io.Copy(w, f)
	return offset + n, err
}

// readFile reads the file at path; a missing file is empty.
func readFile(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	return b, err
}

// lastLines returns the last n lines of b (all of b when n < 0). A final
// line without a newline counts as a line.
func lastLines(b []byte, n int) []byte {
	if n < 0 {
		return b
	}
	if n == 0 {
		return nil
	}
	end := len(b)
	if end > 0 && b[end-1] == '\n' {
		end--
	}
	i := end
	for ; n > 0; n-- {
		j := bytes.LastIndexByte(b[:i], '\n')
		if j < 0 {
			return b
		}
		i = j
	}
	return b[i+1:]
}
