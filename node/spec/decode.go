package spec

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strconv"
	"strings"
	"sync"
)

// MaxSpecSize is the largest document Decode accepts.
const MaxSpecSize = 1 << 20

// Decode parses one service spec from strict JSON, normalizes it and
// validates it.
//
// Strict means: the document is exactly one JSON object (whitespace aside);
// field names match exactly (no case folding); unknown and duplicate fields
// are errors; every value has the schema's JSON type (integers where the
// schema has integers). A null value leaves its field unset.
//
// Every error names the offending field and starts with "spec: ". Errors
// from Validate wrap a *ValidationError (use errors.As).
func Decode(data []byte) (Spec, error) {
	if len(data) > MaxSpecSize {
		return Spec{}, fmt.Errorf("spec: document too large (%d bytes, at most %d)", len(data), MaxSpecSize)
	}
	if err := checkStrict(data); err != nil {
		return Spec{}, err
	}
	var s Spec
	if err := json.Unmarshal(data, &s); err != nil {
		// checkStrict has already checked everything json.Unmarshal checks.
		return Spec{}, fmt.Errorf("spec: %w", err)
	}
	s.Normalize()
	if err := s.Validate(); err != nil {
		return Spec{}, fmt.Errorf("spec: %w", err)
	}
	return s, nil
}

// checkStrict walks data token by token against the Spec schema.
func checkStrict(data []byte) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	w := walker{dec: dec}
	tok, err := dec.Token()
	switch {
	case err == io.EOF:
		return errors.New("spec: empty document: want a JSON object")
	case err != nil:
		return w.syntaxErr(err)
	case tok != json.Delim('{'):
		return fmt.Errorf("spec: want a JSON object, got %s", tokenKind(tok))
	}
	if err := w.object(reflect.TypeFor[Spec](), ""); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("spec: unexpected data after the JSON object at offset %d", dec.InputOffset())
	}
	return nil
}

type walker struct {
	dec *json.Decoder
}

var unmarshalerType = reflect.TypeFor[json.Unmarshaler]()

// value checks the next value against type t; path names it in errors.
func (w walker) value(t reflect.Type, path string) error {
	if reflect.PointerTo(t).Implements(unmarshalerType) {
		var raw json.RawMessage
		if err := w.dec.Decode(&raw); err != nil {
			return w.syntaxErr(err)
		}
		if err := reflect.New(t).Interface().(json.Unmarshaler).UnmarshalJSON(raw); err != nil {
			return fmt.Errorf("spec: %s: %w", path, err)
		}
		return nil
	}
	tok, err := w.dec.Token()
	if err != nil {
		return w.syntaxErr(err)
	}
	if tok == nil { // null: the field stays unset
		return nil
	}
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Struct, reflect.Map:
		if tok != json.Delim('{') {
			return fmt.Errorf("spec: %s: want an object, got %s", path, tokenKind(tok))
		}
		return w.object(t, path)
	case reflect.Slice:
		if tok != json.Delim('[') {
			return fmt.Errorf("spec: %s: want an array, got %s", path, tokenKind(tok))
		}
		for i := 0; w.dec.More(); i++ {
			if err := w.value(t.Elem(), fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
		_, err := w.dec.Token() // ']'
		return w.syntaxErr(err)
	case reflect.String:
		if _, ok := tok.(string); !ok {
			return fmt.Errorf("spec: %s: want a string, got %s", path, tokenKind(tok))
		}
	case reflect.Bool:
		if _, ok := tok.(bool); !ok {
			return fmt.Errorf("spec: %s: want true or false, got %s", path, tokenKind(tok))
		}
	case reflect.Int:
		n, ok := tok.(json.Number)
		if !ok {
			return fmt.Errorf("spec: %s: want an integer, got %s", path, tokenKind(tok))
		}
		if _, err := strconv.ParseInt(string(n), 10, 64); err != nil {
			return fmt.Errorf("spec: %s: want an integer, got %s", path, n)
		}
	case reflect.Float64:
		n, ok := tok.(json.Number)
		if !ok {
			return fmt.Errorf("spec: %s: want a number, got %s", path, tokenKind(tok))
		}
		if _, err := strconv.ParseFloat(string(n), 64); err != nil {
			return fmt.Errorf("spec: %s: number %s is out of range", path, n)
		}
	default:
		// Every field type of the schema is handled above; a new one must be
		// added here.
		panic(fmt.Sprintf("spec: strict decoder does not handle %s (%s)", t, path))
	}
	return nil
}

// object checks the members of an object whose '{' was just read: a struct's
// members against its JSON field names, a map's values against its element
// type.
func (w walker) object(t reflect.Type, path string) error {
	var fields map[string]reflect.Type
	if t.Kind() == reflect.Struct {
		fields = jsonFields(t)
	}
	seen := make(map[string]bool)
	for w.dec.More() {
		tok, err := w.dec.Token()
		if err != nil {
			return w.syntaxErr(err)
		}
		key := tok.(string) // the decoder guarantees object keys are strings
		if seen[key] {
			if fields != nil {
				return fmt.Errorf("spec: %sduplicate field %q", prefix(path), key)
			}
			return fmt.Errorf("spec: %sduplicate key %q", prefix(path), key)
		}
		seen[key] = true
		var (
			ft   reflect.Type
			elem string
		)
		if fields != nil {
			var ok bool
			if ft, ok = fields[key]; !ok {
				return fmt.Errorf("spec: %sunknown field %q", prefix(path), key)
			}
			elem = key
			if path != "" {
				elem = path + "." + key
			}
		} else {
			ft = t.Elem()
			elem = path + "[" + strconv.Quote(key) + "]"
		}
		if err := w.value(ft, elem); err != nil {
			return err
		}
	}
	_, err := w.dec.Token() // '}'
	return w.syntaxErr(err)
}

func prefix(path string) string {
	if path == "" {
		return ""
	}
	return path + ": "
}

// syntaxErr turns a decoder error into a spec error with its offset.
func (w walker) syntaxErr(err error) error {
	var se *json.SyntaxError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &se):
		return fmt.Errorf("spec: invalid JSON at offset %d: %s", se.Offset, strings.TrimPrefix(se.Error(), "json: "))
	case err == io.EOF || errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("spec: invalid JSON: unexpected end of input at offset %d", w.dec.InputOffset())
	default:
		return fmt.Errorf("spec: invalid JSON: %w", err)
	}
}

func tokenKind(tok json.Token) string {
	switch v := tok.(type) {
	case json.Delim:
		if v == '{' {
			return "an object"
		}
		return "an array"
	case string:
		return "a string"
	case json.Number:
		return "the number " + string(v)
	case bool:
		return "a boolean"
	case nil:
		return "null"
	}
	return fmt.Sprintf("%T", tok)
}

var fieldCache sync.Map // reflect.Type -> map[string]reflect.Type

// jsonFields maps the JSON names of a struct's fields to their types.
func jsonFields(t reflect.Type) map[string]reflect.Type {
	if m, ok := fieldCache.Load(t); ok {
		return m.(map[string]reflect.Type)
	}
	m := make(map[string]reflect.Type, t.NumField())
	for f := range t.Fields() {
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		switch name {
		case "-":
			continue
		case "":
			name = f.Name
		}
		m[name] = f.Type
	}
	fieldCache.Store(t, m)
	return m
}
