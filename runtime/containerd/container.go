package containerd

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/containerd"
	tasks "github.com/containerd/containerd/api/services/tasks/v1"
	tasktypes "github.com/containerd/containerd/api/types/task"
	"github.com/containerd/containerd/cio"
	"github.com/containerd/containerd/contrib/seccomp"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/identifiers"
	"github.com/containerd/containerd/oci"
	"github.com/containerd/platforms"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/shoalmesh/shoal/runtime"
)

// cfsPeriod is the CFS period CPU limits are expressed in (100 ms, as
// docker does).
const cfsPeriod = 100_000

// cleanupTimeout bounds the cleanup after a failed Start, which runs
// even when the caller's context has ended.
const cleanupTimeout = 30 * time.Second

// Start creates and starts the replica's container: it makes sure the
// image is there (EnsureImage), builds a hardened spec, creates the task
// with its output going to the log file, attaches it to the network
// (bridge mode) and starts it. On any failure everything created so far
// is removed again.
func (d *Driver) Start(ctx context.Context, rs runtime.ReplicaSpec) (runtime.Replica, error) {
	if err := identifiers.Validate(rs.ID); err != nil {
		return runtime.Replica{}, fmt.Errorf("containerd: start: %w", err)
	}
	if r, ok, err := d.startPrepared(ctx, rs); ok || err != nil {
		return r, err
	}
	return d.create(ctx, rs, false)
}

// Prepare implements runtime.Preparer: everything Start does but the
// task's start. The container carries LabelPrepared; its task waits in
// runc's created state, its network is set up.
func (d *Driver) Prepare(ctx context.Context, rs runtime.ReplicaSpec) (runtime.Replica, error) {
	if err := identifiers.Validate(rs.ID); err != nil {
		return runtime.Replica{}, fmt.Errorf("containerd: prepare: %w", err)
	}
	return d.create(ctx, rs, true)
}

// errCrashed is what create returns at a crash point (tests only).
var errCrashed = errors.New("containerd: crashed on purpose (test)")

// startPrepared starts the prepared container rs.ID if there is one of
// rs's version (ok true). A container of that ID that cannot be used (other
// version, not prepared, task gone) is removed so that the caller creates
// it afresh (ok false, err nil); err is set when even that fails.
func (d *Driver) startPrepared(ctx context.Context, rs runtime.ReplicaSpec) (runtime.Replica, bool, error) {
	ctx = d.nsCtx(ctx)
	t0 := time.Now()
	container, err := d.client.LoadContainer(ctx, rs.ID)
	if errdefs.IsNotFound(err) {
		return runtime.Replica{}, false, nil
	}
	if err != nil {
		return runtime.Replica{}, false, classify(err, "start %s", rs.ID)
	}
	mode := rs.Network
	if mode == "" {
		mode = NetworkBridge
	}
	info, err := container.Info(ctx, containerd.WithoutRefreshedMetadata)
	if err != nil {
		return runtime.Replica{}, false, classify(err, "start %s", rs.ID)
	}
	r := replicaFromLabels(rs.ID, info.Image, info.Labels)
	prepared := info.Labels[LabelPrepared] == "1" && r.StartedAt.IsZero()
	usable := prepared && r.Version == rs.Version && info.Labels[LabelNetwork] == mode &&
		(mode != NetworkBridge || r.IP.IsValid()) // a prepare cut short may lack its network
	var status containerd.ProcessStatus
	task, err := container.Task(ctx, nil)
	if err == nil {
		if st, serr := task.Status(ctx); serr == nil {
			status = st.Status
		}
	}
	usable = usable && status == containerd.Created
	if !prepared && status == containerd.Running {
		// Not ours to replace: a running replica of this very ID.
		return runtime.Replica{}, false, fmt.Errorf("containerd: start %s: %w: a running container has this ID", rs.ID, errdefs.ErrAlreadyExists)
	}
	if !usable {
		d.log.Warn("start: a container with this ID is in the way; removing it", "id", rs.ID,
			"prepared", info.Labels[LabelPrepared] == "1", "version", r.Version)
		if err := d.Stop(ctx, rs.ID, time.Second); err != nil {
			return runtime.Replica{}, false, fmt.Errorf("containerd: start %s: removing the container in the way: %w", rs.ID, err)
		}
		return runtime.Replica{}, false, nil
	}
	if err := task.Start(ctx); err != nil {
		err = classify(err, "start prepared task %s", rs.ID)
		if serr := d.Stop(context.WithoutCancel(ctx), rs.ID, time.Second); serr != nil {
			d.log.Warn("start cleanup: prepared container", "id", rs.ID, "err", serr)
		}
		return runtime.Replica{}, false, err
	}
	started := time.Now().UTC()
	if _, err := container.SetLabels(ctx, map[string]string{LabelStarted: started.Format(time.RFC3339Nano)}); err != nil {
		d.log.Warn("label start time", "id", rs.ID, "err", err)
	}
	d.log.Info("replica started", "id", rs.ID, "image", info.Image, "network", mode, "ip", r.IP,
		"host_ports", info.Labels[LabelHostPorts], "prepared", true, "took", started.Sub(t0).Round(time.Millisecond))
	r.State, r.StartedAt = runtime.StateRunning, started
	return r, true, nil
}

// create makes the replica's container, task and network, and starts the
// task unless prepare is set.
func (d *Driver) create(ctx context.Context, rs runtime.ReplicaSpec, prepare bool) (runtime.Replica, error) {
	verb := "start"
	if prepare {
		verb = "prepare"
	}
	mode := rs.Network
	if mode == "" {
		mode = NetworkBridge
	}
	if mode != NetworkBridge && mode != NetworkHost {
		return runtime.Replica{}, fmt.Errorf("containerd: %s %s: unknown network mode %q (want %q or %q)", verb, rs.ID, rs.Network, NetworkBridge, NetworkHost)
	}
	ctx = d.nsCtx(ctx)
	t0 := time.Now()
	if _, err := d.EnsureImage(ctx, rs.Image); err != nil {
		return runtime.Replica{}, err
	}
	img, err := d.localImage(ctx, rs.Image)
	if err != nil {
		return runtime.Replica{}, err
	}
	image := containerd.NewImageWithPlatform(d.client, img, platforms.Default())

	labels := map[string]string{
		runtime.LabelService: rs.Service,
		runtime.LabelSlot:    strconv.Itoa(rs.Slot),
		runtime.LabelVersion: rs.Version,
		runtime.LabelNode:    d.cfg.Node,
		LabelNetwork:         mode,
	}
	var hostPorts map[int]int
	if mode == NetworkBridge {
		hostPorts, err = d.allocPorts(ctx, rs.ID, rs.Ports)
		if err != nil {
			return runtime.Replica{}, err
		}
		defer d.releasePorts(rs.ID) // the label holds them from now on
	} else if len(rs.Ports) > 0 {
		hostPorts = make(map[int]int, len(rs.Ports))
		for _, p := range rs.Ports {
			hostPorts[p] = p
		}
	}
	if len(hostPorts) > 0 {
		labels[LabelHostPorts] = formatHostPorts(hostPorts)
	}
	if prepare {
		labels[LabelPrepared] = "1"
	}

	container, err := d.client.NewContainer(ctx, rs.ID,
		containerd.WithImage(image),
		containerd.WithSnapshotter(snapshotter),
		containerd.WithNewSnapshot(rs.ID, image),
		containerd.WithRuntime(runcRuntime, nil),
		containerd.WithNewSpec(d.specOpts(rs, mode, image)...),
		containerd.WithContainerLabels(labels),
	)
	if err != nil {
		return runtime.Replica{}, classify(err, "create container %s", rs.ID)
	}
	if d.crashAfter == "container" {
		return runtime.Replica{}, errCrashed
	}
	tContainer := time.Now()
	var (
		task     containerd.Task
		attached bool
		pin      = d.pinPath(rs.ID)
	)
	fail := func(err error) (runtime.Replica, error) {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
		defer cancel()
		if task != nil {
			if _, derr := task.Delete(cctx, containerd.WithProcessKill); derr != nil && !errdefs.IsNotFound(derr) {
				d.log.Warn("start cleanup: delete task", "id", rs.ID, "err", derr)
			}
		}
		if attached {
			if terr := d.teardownNetwork(cctx, rs.ID, pin); terr != nil {
				d.log.Warn("start cleanup: network", "id", rs.ID, "err", terr)
			}
			if uerr := unpinNetns(pin); uerr != nil {
				d.log.Warn("start cleanup: netns", "id", rs.ID, "err", uerr)
			}
		}
		if derr := container.Delete(cctx, containerd.WithSnapshotCleanup); derr != nil && !errdefs.IsNotFound(derr) {
			d.log.Warn("start cleanup: delete container", "id", rs.ID, "err", derr)
		}
		d.removeLogs(rs.ID)
		return runtime.Replica{}, err
	}

	d.removeLogs(rs.ID) // a stale log of an earlier container with this ID
	task, err = container.NewTask(ctx, cio.LogFile(d.logPath(rs.ID)))
	for try := 0; errdefs.IsAlreadyExists(err) && try < staleTaskRetries; try++ {
		// A task of an earlier container with this ID is still registered
		// (its deletion was cut short, e.g. by a crash of the agent):
		// delete it through the new container, then try again.
		if try == 0 {
			d.log.Warn("start: a stale task holds the ID; deleting it", "id", rs.ID)
		}
		d.deleteStaleTask(ctx, rs.ID)
		pause := time.NewTimer(100 * time.Millisecond) // for containerd to see the shim exit
		select {
		case <-ctx.Done():
		case <-pause.C:
		}
		pause.Stop()
		task, err = container.NewTask(ctx, cio.LogFile(d.logPath(rs.ID)))
	}
	if err != nil {
		task = nil
		return fail(classify(err, "create task %s", rs.ID))
	}
	if d.crashAfter == "task" {
		return runtime.Replica{}, errCrashed
	}
	tTask := time.Now()
	var ip netip.Addr
	if mode == NetworkBridge {
		attached = true // a failed setup may have allocated part of it
		if err := pinNetns(task.Pid(), pin); err != nil {
			return fail(err)
		}
		if d.crashAfter == "netns" {
			return runtime.Replica{}, errCrashed
		}
		ip, err = d.setupNetwork(ctx, rs.ID, pin, hostPorts)
		if err != nil {
			return fail(err)
		}
		if d.crashAfter == "network" {
			return runtime.Replica{}, errCrashed
		}
		if _, err := container.SetLabels(ctx, map[string]string{LabelIP: ip.String()}); err != nil {
			return fail(classify(err, "label %s", rs.ID))
		}
	}
	tNet := time.Now()
	if prepare {
		d.log.Info("replica prepared", "id", rs.ID, "image", img.Name, "network", mode, "ip", ip, "host_ports", labels[LabelHostPorts],
			"took", tNet.Sub(t0).Round(time.Millisecond), "container", tContainer.Sub(t0).Round(time.Millisecond),
			"task", tTask.Sub(tContainer).Round(time.Millisecond), "net", tNet.Sub(tTask).Round(time.Millisecond))
		return runtime.Replica{
			ID: rs.ID, Service: rs.Service, Slot: rs.Slot, Version: rs.Version, Image: img.Name,
			State: runtime.StatePrepared, IP: ip, HostPorts: hostPorts,
		}, nil
	}
	if err := task.Start(ctx); err != nil {
		return fail(classify(err, "start task %s", rs.ID))
	}
	started := time.Now().UTC()
	if _, err := container.SetLabels(ctx, map[string]string{LabelStarted: started.Format(time.RFC3339Nano)}); err != nil {
		d.log.Warn("label start time", "id", rs.ID, "err", err)
	}
	d.log.Info("replica started", "id", rs.ID, "image", img.Name, "network", mode, "ip", ip, "host_ports", labels[LabelHostPorts],
		"took", started.Sub(t0).Round(time.Millisecond), "container", tContainer.Sub(t0).Round(time.Millisecond),
		"task", tTask.Sub(tContainer).Round(time.Millisecond), "net", tNet.Sub(tTask).Round(time.Millisecond),
		"start", started.Sub(tNet).Round(time.Millisecond))
	return runtime.Replica{
		ID:        rs.ID,
		Service:   rs.Service,
		Slot:      rs.Slot,
		Version:   rs.Version,
		Image:     img.Name,
		State:     runtime.StateRunning,
		StartedAt: started,
		IP:        ip,
		HostPorts: hostPorts,
	}, nil
}

// specOpts builds the OCI spec options of a replica: containerd's
// defaults and the image config, the command and environment, hardening
// (no new privileges, default seccomp profile), resource limits and the
// network namespace.
func (d *Driver) specOpts(rs runtime.ReplicaSpec, mode string, image containerd.Image) []oci.SpecOpts {
	opts := []oci.SpecOpts{oci.WithImageConfig(image)}
	if len(rs.Command) > 0 {
		opts = append(opts, oci.WithProcessArgs(rs.Command...))
	}
	var env []string
	if mode == NetworkHost && len(rs.Ports) > 0 {
		env = append(env, "PORT="+strconv.Itoa(rs.Ports[0]))
	}
	for _, k := range slices.Sorted(maps.Keys(rs.Env)) {
		env = append(env, k+"="+rs.Env[k])
	}
	if len(env) > 0 {
		opts = append(opts, oci.WithEnv(env))
	}
	opts = append(opts, oci.WithNoNewPrivileges, seccomp.WithDefaultProfile())
	if rs.CPUs > 0 {
		quota := max(int64(rs.CPUs*cfsPeriod), 1000) // the kernel's minimum is 1 ms
		opts = append(opts, oci.WithCPUCFS(quota, cfsPeriod))
	}
	if rs.Memory > 0 {
		opts = append(opts, oci.WithMemoryLimit(uint64(rs.Memory)))
	}
	if mode == NetworkHost {
		opts = append(opts, oci.WithHostNamespace(specs.NetworkNamespace), oci.WithHostHostsFile, oci.WithHostResolvconf)
	} else {
		// Like docker: a bridge-mode container is named after itself.
		opts = append(opts, oci.WithHostname(rs.ID))
	}
	return opts
}

// Stop stops the container (SIGTERM, SIGKILL after timeout; zero timeout
// means Config.StopTimeout), deletes its task, releases its network,
// deletes it with its snapshot and removes its logs. A missing container
// is not an error.
func (d *Driver) Stop(ctx context.Context, id string, timeout time.Duration) error {
	if timeout <= 0 {
		timeout = d.cfg.StopTimeout
	}
	t0 := time.Now()
	var killed, taskGone, netGone time.Duration
	ctx = d.nsCtx(ctx)
	container, err := d.client.LoadContainer(ctx, id)
	if errdefs.IsNotFound(err) {
		d.removeLogs(id)
		return nil
	}
	if err != nil {
		return classify(err, "stop %s", id)
	}
	labels, err := container.Labels(ctx)
	if err != nil {
		return classify(err, "stop %s", id)
	}
	task, err := container.Task(ctx, nil)
	switch {
	case err == nil:
		if err := d.killTask(ctx, task, timeout); err != nil {
			return fmt.Errorf("containerd: stop %s: %w", id, err)
		}
		killed = time.Since(t0)
		if _, err := task.Delete(ctx, containerd.WithProcessKill); err != nil && !errdefs.IsNotFound(err) {
			return classify(err, "stop %s: delete task", id)
		}
		taskGone = time.Since(t0)
	case !errdefs.IsNotFound(err):
		return classify(err, "stop %s: task", id)
	default:
		// containerd reports a task whose shim connection is gone as not
		// found, yet keeps it registered, and a later task with this ID
		// would fail with "already exists": delete it through the
		// tasks service, which drops such a registration.
		d.deleteStaleTask(ctx, id)
	}
	if labels[LabelNetwork] != NetworkHost {
		// The namespace is pinned, so it outlived the task. Without the
		// pin (a reboot) tear down what can be without the namespace.
		pin, nsPath := d.pinPath(id), ""
		if _, err := os.Stat(pin); err == nil {
			nsPath = pin
		}
		if err := d.teardownNetwork(ctx, id, nsPath); err != nil {
			return err
		}
		if err := unpinNetns(pin); err != nil {
			return err
		}
		netGone = time.Since(t0)
	}
	if err := container.Delete(ctx, containerd.WithSnapshotCleanup); err != nil && !errdefs.IsNotFound(err) {
		return classify(err, "stop %s: delete container", id)
	}
	d.removeLogs(id)
	// Times since the stop began: the task exited (SIGTERM, or SIGKILL
	// after timeout), its task was deleted, its network released.
	d.log.Info("replica stopped", "id", id, "took", time.Since(t0).Round(time.Millisecond),
		"exited", killed.Round(time.Millisecond), "task_deleted", taskGone.Round(time.Millisecond),
		"net_released", netGone.Round(time.Millisecond))
	return nil
}

// killTask sends SIGTERM, then SIGKILL to every process when the task has
// not exited after timeout, and waits for the exit.
func (d *Driver) killTask(ctx context.Context, task containerd.Task, timeout time.Duration) error {
	st, err := task.Status(ctx)
	if err != nil {
		return classify(err, "task status")
	}
	if st.Status == containerd.Stopped {
		return nil
	}
	if st.Status == containerd.Created {
		timeout = 0 // never started (prepared): nothing to shut down cleanly
	}
	waitC, err := task.Wait(ctx)
	if err != nil {
		return classify(err, "wait task")
	}
	if err := task.Kill(ctx, syscall.SIGTERM); err != nil && !errdefs.IsNotFound(err) {
		return classify(err, "SIGTERM")
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-waitC:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
	}
	if err := task.Kill(ctx, syscall.SIGKILL, containerd.WithKillAll); err != nil && !errdefs.IsNotFound(err) {
		return classify(err, "SIGKILL")
	}
	select {
	case <-waitC:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// List returns the containers that carry runtime.LabelService, sorted by
// ID, with their task state.
//
// The tasks' states come from one ListTasks call, not two Get calls per
// container: under load (a heal, where every host starts and stops
// containers on two cores) the per-container calls made a list take 1-4
// s, and every reconcile pass waits for it. containerd leaves out of
// ListTasks a task whose shim did not answer in time, so a container
// without a task there is asked for on its own.
func (d *Driver) List(ctx context.Context) ([]runtime.Replica, error) {
	ctx = d.nsCtx(ctx)
	cs, err := d.client.Containers(ctx, serviceFilter)
	if err != nil {
		return nil, classify(err, "list containers")
	}
	var listed map[string]*tasktypes.Process
	if resp, err := d.client.TaskService().List(ctx, &tasks.ListTasksRequest{}); err == nil {
		listed = make(map[string]*tasktypes.Process, len(resp.Tasks))
		for _, p := range resp.Tasks {
			listed[p.ID] = p
		}
	} else {
		d.log.Debug("list tasks failed: asking per container", "err", err)
	}
	out := make([]runtime.Replica, 0, len(cs))
	for _, c := range cs {
		r, err := d.replica(ctx, c, listed[c.ID()])
		if errdefs.IsNotFound(err) || errors.Is(err, runtime.ErrNotFound) {
			continue // removed meanwhile
		}
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b runtime.Replica) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

// replica describes container c from its labels and its task's state: p
// when the caller has it, else asked for.
func (d *Driver) replica(ctx context.Context, c containerd.Container, p *tasktypes.Process) (runtime.Replica, error) {
	info, err := c.Info(ctx, containerd.WithoutRefreshedMetadata)
	if err != nil {
		return runtime.Replica{}, classify(err, "container %s", c.ID())
	}
	r := replicaFromLabels(c.ID(), info.Image, info.Labels)
	prepared := info.Labels[LabelPrepared] == "1" && r.StartedAt.IsZero()
	if p == nil {
		resp, err := d.client.TaskService().Get(ctx, &tasks.GetRequest{ContainerID: c.ID()})
		err = errdefs.FromGRPC(err)
		switch {
		case errdefs.IsNotFound(err) && prepared:
			r.State = runtime.StatePrepared // its task is gone: Start replaces it
			return r, nil
		case errdefs.IsNotFound(err):
			r.State = runtime.StateCreated
			if !r.StartedAt.IsZero() {
				r.State = runtime.StateExited
			}
			return r, nil
		case err != nil:
			return runtime.Replica{}, classify(err, "container %s task", c.ID())
		}
		p = resp.Process
	}
	switch p.Status {
	case tasktypes.Status_RUNNING:
		r.State = runtime.StateRunning
	case tasktypes.Status_CREATED:
		r.State = runtime.StateCreated
		if prepared {
			r.State = runtime.StatePrepared
		}
	case tasktypes.Status_STOPPED:
		r.State = runtime.StateExited
		r.ExitCode = int(p.ExitStatus)
	default: // paused, pausing, unknown
		r.State = runtime.StateUnknown
	}
	return r, nil
}

// replicaFromLabels decodes a container's labels (outside input: bad
// values are dropped, not fatal). State is left to the caller.
func replicaFromLabels(id, image string, labels map[string]string) runtime.Replica {
	r := runtime.Replica{
		ID:      id,
		Service: labels[runtime.LabelService],
		Version: labels[runtime.LabelVersion],
		Image:   image,
		State:   runtime.StateUnknown,
	}
	if s, err := strconv.Atoi(labels[runtime.LabelSlot]); err == nil {
		r.Slot = s
	}
	if t, err := time.Parse(time.RFC3339Nano, labels[LabelStarted]); err == nil {
		r.StartedAt = t
	}
	if ip, err := netip.ParseAddr(labels[LabelIP]); err == nil {
		r.IP = ip
	}
	if hp, err := parseHostPorts(labels[LabelHostPorts]); err == nil {
		r.HostPorts = hp
	}
	return r
}

// Exec runs cmd in the running container id, with the container's
// process settings (user, env, cwd, capabilities), and returns its exit
// code. Its output is discarded. A missing container or task wraps
// runtime.ErrNotFound; a command that cannot be started is an error.
func (d *Driver) Exec(ctx context.Context, id string, cmd []string) (int, error) {
	if len(cmd) == 0 {
		return -1, fmt.Errorf("containerd: exec %s: empty command", id)
	}
	ctx = d.nsCtx(ctx)
	container, err := d.client.LoadContainer(ctx, id)
	if err != nil {
		return -1, classify(err, "exec %s", id)
	}
	spec, err := container.Spec(ctx)
	if err != nil {
		return -1, classify(err, "exec %s: spec", id)
	}
	task, err := container.Task(ctx, nil)
	if err != nil {
		return -1, classify(err, "exec %s: task", id)
	}
	pspec := *spec.Process
	pspec.Args = cmd
	pspec.Terminal = false
	var rnd [8]byte
	_, _ = rand.Read(rnd[:])
	execID := "exec-" + hex.EncodeToString(rnd[:])
	proc, err := task.Exec(ctx, execID, &pspec, cio.NullIO)
	if err != nil {
		return -1, classify(err, "exec %s", id)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
		defer cancel()
		if _, err := proc.Delete(cctx, containerd.WithProcessKill); err != nil && !errdefs.IsNotFound(err) {
			d.log.Warn("exec cleanup", "id", id, "exec", execID, "err", err)
		}
	}()
	statusC, err := proc.Wait(ctx)
	if err != nil {
		return -1, classify(err, "exec %s: wait", id)
	}
	if err := proc.Start(ctx); err != nil {
		return -1, classify(err, "exec %s %q", id, cmd[0])
	}
	select {
	case st := <-statusC:
		code, _, err := st.Result()
		if err != nil {
			return -1, classify(err, "exec %s", id)
		}
		return int(code), nil
	case <-ctx.Done():
		return -1, fmt.Errorf("containerd: exec %s: %w", id, ctx.Err())
	}
}

// staleTaskRetries bounds the attempts to create a task after deleting a
// stale one of the same ID (the registration goes when its shim exits,
// shortly after the delete).
const staleTaskRetries = 10

// deleteStaleTask kills and deletes the task of container id through the
// tasks service, best effort.
func (d *Driver) deleteStaleTask(ctx context.Context, id string) {
	ts := d.client.TaskService()
	_, _ = ts.Kill(ctx, &tasks.KillRequest{ContainerID: id, Signal: uint32(syscall.SIGKILL), All: true})
	if _, err := ts.Delete(ctx, &tasks.DeleteTaskRequest{ContainerID: id}); err != nil && !errdefs.IsNotFound(err) {
		d.log.Debug("delete stale task", "id", id, "err", err)
	}
}

// Queued implements runtime.AcceptQueuer: it reads the listening
// sockets of the task's network namespace from /proc/PID/net/tcp and
// tcp6 (the host's, for host networking).
func (d *Driver) Queued(ctx context.Context, id string, ports []int) (int, error) {
	ctx = d.nsCtx(ctx)
	container, err := d.client.LoadContainer(ctx, id)
	if err != nil {
		return 0, classify(err, "queued %s", id)
	}
	task, err := container.Task(ctx, nil)
	if err != nil {
		return 0, classify(err, "queued %s: task", id)
	}
	total := 0
	for _, f := range []string{"tcp", "tcp6"} {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/%s", task.Pid(), f))
		if errors.Is(err, fs.ErrNotExist) && f == "tcp6" {
			continue // no IPv6 in the kernel
		}
		if err != nil {
			return 0, fmt.Errorf("containerd: queued %s: %w", id, err)
		}
		n, err := runtime.ListenQueued(b, ports)
		if err != nil {
			return 0, fmt.Errorf("containerd: queued %s: %w", id, err)
		}
		total += n
	}
	return total, nil
}

var _ runtime.AcceptQueuer = (*Driver)(nil)
