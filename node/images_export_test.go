package node

// Test-only access for the image API tests.

// SetMaxImageArchive lowers the POST /v1/images size cap and returns a
// function that restores it. Call it before the agents serve image calls.
func SetMaxImageArchive(n int64) (restore func()) {
	old := maxImageArchive
	maxImageArchive = n
	return func() { maxImageArchive = old }
}
