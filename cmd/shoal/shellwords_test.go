package main

import (
	"reflect"
	"strings"
	"testing"
)

func TestSplitWords(t *testing.T) {
	tests := []struct {
		in   string
		want []string
		err  string
	}{
		{"", nil, ""},
		{"   ", nil, ""},
		{"a", []string{"a"}, ""},
		{" a  b\tc\n", []string{"a", "b", "c"}, ""},
		{`pg_isready -U 'my user'`, []string{"pg_isready", "-U", "my user"}, ""},
		{`sh -c "echo \"hi\" \\ $HOME"`, []string{"sh", "-c", `echo "hi" \ $HOME`}, ""},
		{`'a'"b"c`, []string{"abc"}, ""},
		{`'' ""`, []string{"", ""}, ""},
		{`a\ b \'`, []string{"a b", "'"}, ""},
		{`"a\nb"`, []string{`a\nb`}, ""},
		{`'it''s'`, []string{"its"}, ""},
		{`'unterminated`, nil, "unterminated ' quote"},
		{`"unterminated`, nil, `unterminated " quote`},
		{`"ends in \"`, nil, `unterminated " quote`},
		{`trailing\`, nil, "trailing backslash"},
	}
	for _, tt := range tests {
		got, err := splitWords(tt.in)
		if tt.err != "" {
			if err == nil || err.Error() != tt.err {
				t.Errorf("splitWords(%q) = %q, %v; want error %q", tt.in, got, err, tt.err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("splitWords(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

// quoteWord quotes w for splitWords.
func quoteWord(w string) string {
	return "'" + strings.ReplaceAll(w, "'", `'\''`) + "'"
}

func FuzzSplitWords(f *testing.F) {
	for _, s := range []string{"", "a b", `sh -c "echo \"hi\""`, `'x y' z\ w`, `"unterminated`, `\`, "a\tb\n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		words, err := splitWords(s)
		if err != nil {
			return
		}
		// Quoting every word and splitting again gives the same words.
		quoted := make([]string, len(words))
		for i, w := range words {
			quoted[i] = quoteWord(w)
		}
		again, err := splitWords(strings.Join(quoted, " "))
		if err != nil || !reflect.DeepEqual(again, words) {
			t.Fatalf("round trip of %q: %q, %v; want %q", s, again, err, words)
		}
	})
}
