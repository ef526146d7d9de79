package node

import "net/http"

// registerImageRoutes adds the image endpoints (POST /v1/images, GET
// /v1/images) to the API.
func (a *Agent) registerImageRoutes(mux *http.ServeMux) {}
