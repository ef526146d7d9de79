// Package runtime is the container runtime as the agent sees it: the
// Driver interface, and Fake, an in-memory implementation beside it for
// other packages' tests.
//
// Today a Driver only answers whether it can run containers; placement
// gives slots only to nodes whose driver is ready. The containerd
// implementation (runtime/containerd), images, CNI networking, probes and
// logs arrive with the Runtime issue (#4) and extend this interface.
package runtime
