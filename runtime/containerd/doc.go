// Package containerd is the runtime.Driver that runs replicas as real
// containerd containers (containerd Go client v1.7, which talks to
// containerd 1.6 and later daemons).
//
// # Images
//
// ImportImage takes `docker save` tarballs and OCI image archives. Names
// are stored normalised the way docker normalises them
// ("shoal-demo:latest" is stored as "docker.io/library/shoal-demo:latest"),
// whether they come from a docker RepoTag or an OCI
// "org.opencontainers.image.ref.name" annotation; an image without a name
// is stored as "import@sha256:...". EnsureImage and Start accept either
// spelling. Images are unpacked for platforms.Default() and keep their
// compressed layers in the content store. Pulls use plain HTTP for
// registries on loopback and HTTPS elsewhere.
//
// # Containers
//
// Each replica is a container with containerd's default spec, no new
// privileges, containerd's default seccomp profile, optional CFS quota and
// memory limit, and the runtime.Label* labels plus this package's own
// (network mode, host ports, IP, start time), so a new Driver finds and
// manages the containers of an earlier one (adoption).
//
// # Networking
//
// Bridge mode attaches through CNI (go-cni) with the standard plugins
// bridge (host-local IPAM in Config.Subnet, state under DataDir/cni) and
// loopback. Host ports (HostIP:hostPort to container:port) and
// masquerading are DNAT and masquerade rules in an nftables table of the
// driver's own, one netlink transaction per replica, plus two iptables
// FORWARD accepts per driver (see hostports_nftables.go for why not
// portmap, firewall and ipMasq). The created task's network namespace is
// pinned by a bind mount at DataDir/netns/<id>, attached, and only then
// is the task started. Stop tears the network down after the task is
// gone but while the pin keeps the namespace alive, so the bridge plugin
// removes the veth too; then the pin is removed. Host ports are chosen
// from Config.PortRange (free by a bind test, not held by another
// container's label). Host mode shares the host's network namespace,
// hosts file and resolv.conf and passes the first port as $PORT.
//
// # Logs
//
// The shim writes a container's stdout and stderr to
// DataDir/logs/<id>.log (opened O_APPEND, so it keeps writing while the
// agent is down). A background loop rotates files above LogMaxBytes by
// copy-truncate into one <id>.log.1; lines written between the copy and
// the truncate are lost, which bounds the disk use without stopping the
// container. Logs follows by polling the file; a follower that falls
// behind by more than a whole file across a rotation misses that part.
//
// # Concurrency
//
// A Driver is safe for concurrent use. Operations on different containers
// run in parallel; Start serialises only its host port choice.
package containerd
