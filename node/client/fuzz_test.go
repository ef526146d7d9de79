package client

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

// FuzzResponseError feeds arbitrary error bodies to the error decoder: it
// never panics and always produces an *Error with the status and a message.
func FuzzResponseError(f *testing.F) {
	for _, s := range []string{`{"error":"x"}`, `{"error":""}`, `{"error":1}`, `<html></html>`, "plain\n", "", `{`, `[]`, `null`} {
		f.Add(400, s)
	}
	f.Fuzz(func(t *testing.T, status int, body string) {
		if status < 100 || status > 999 {
			status = 500
		}
		resp := &http.Response{StatusCode: status, Status: "x", Body: io.NopCloser(strings.NewReader(body))}
		err := responseError(resp)
		e, ok := err.(*Error)
		if !ok || e.Status != status || e.Message == "" {
			t.Fatalf("responseError(%d, %q) = %#v", status, body, err)
		}
	})
}
