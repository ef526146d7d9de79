package gossip

import (
	"bytes"
	"context"
	"log"
	"log/slog"
	"strings"
)

// StdLogger returns a *log.Logger, the kind serf and memberlist (and a
// memberlist.NetTransportConfig) take, whose lines go to l: a leading
// "[DEBUG]", "[INFO]", "[WARN]" or "[ERR]" becomes the slog level and a
// "serf:" or "memberlist:" prefix becomes the "component" attribute.
func StdLogger(l *slog.Logger) *log.Logger {
	return log.New(&logWriter{l: l}, "", 0)
}

// logWriter adapts *log.Logger output to slog. log.Logger serializes calls
// to Write and passes one formatted entry per call.
type logWriter struct {
	l *slog.Logger
}

// levelPrefixes maps hashicorp log prefixes to slog levels.
var levelPrefixes = []struct {
	prefix string
	level  slog.Level
}{
	{"[TRACE]", slog.LevelDebug},
	{"[DEBUG]", slog.LevelDebug},
	{"[INFO]", slog.LevelInfo},
	{"[WARN]", slog.LevelWarn},
	{"[WARNING]", slog.LevelWarn},
	{"[ERR]", slog.LevelError},
	{"[ERROR]", slog.LevelError},
}

// Write logs one entry (possibly several lines) and never fails.
func (w *logWriter) Write(p []byte) (int, error) {
	level, msg := parseLogLine(string(bytes.TrimRight(p, "\r\n")))
	if !w.l.Enabled(context.Background(), level) {
		return len(p), nil
	}
	component := "gossip"
	for _, c := range []string{"serf", "memberlist"} {
		if rest, ok := strings.CutPrefix(msg, c+": "); ok {
			component, msg = c, rest
			break
		}
	}
	w.l.Log(context.Background(), level, msg, "component", component)
	return len(p), nil
}

// parseLogLine splits a "[LEVEL] message" line. Lines without a known
// prefix are logged at INFO unchanged.
func parseLogLine(line string) (slog.Level, string) {
	for _, lp := range levelPrefixes {
		if rest, ok := strings.CutPrefix(line, lp.prefix); ok {
			return lp.level, strings.TrimSpace(rest)
		}
	}
	return slog.LevelInfo, line
}
