// Package runtime will hold the container driver interface, its
// containerd implementation (runtime/containerd) and an in-memory fake for
// unit tests: images, CNI networking, health probes, logs and hardening.
//
// It is built by the Runtime issue (#4). Until then agents advertise
// "no container runtime driver" in their tags and own no replicas.
package runtime
