// Command shoal-detectbench measures gossip failure detection with real
// `shoal agent` processes; scripts/bench-detection.sh runs it (see there).
//
// It starts -nodes agents on their own loopback addresses (-net.1 .. -net.N,
// default ports, no containerd) with -profile, waits until every agent sees
// every member alive, then:
//
//  1. soak: for -soak, starting as soon as the cluster has formed, nothing
//     is killed; every agent's API is polled every -soak-poll and any member
//     seen suspect or failed is a false detection, as is any suspicion or
//     failure in the agents' logs (memberlist's "Suspect X has failed", the
//     suspected node's "Refuting a suspect/dead message", the agent's
//     "member fail");
//  2. detection: -rounds times, SIGKILL one agent (n2..nN in turn), time
//     until every other agent's API (polled every -poll) reports it failed,
//     then restart it and wait until all agree it is alive again. Any
//     suspicion or failure of a member other than that round's victim, from
//     the end of the previous round to the end of this one (restarts and
//     settling included), counts as false too.
//
// It is a Go program rather than shell because the detection time is taken by
// polling all survivors concurrently every 20 ms over kept-alive HTTP
// connections: `shoal nodes` forked four times per tick would cost more CPU
// than the agents themselves on a loaded 2-core machine, and coarsen the
// timing to the fork latency. It prints a human summary and, with -json, one
// JSON line of results.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

type options struct {
	shoal, profile, label, net, dir, jsonOut string
	nodes, rounds                            int
	soak, poll, soakPoll, settle, timeout    time.Duration
	keep                                     bool
}

func main() {
	var o options
	flag.StringVar(&o.shoal, "shoal", "bin/shoal", "shoal binary")
	flag.StringVar(&o.profile, "profile", "lan", "gossip profile passed to the agents (--profile)")
	flag.StringVar(&o.label, "label", "", "name of this run in the results (default: the profile)")
	flag.StringVar(&o.net, "net", "127.0.66", "first three octets of the agents' loopback addresses")
	flag.StringVar(&o.dir, "dir", "", "work directory (default: a new temporary one, removed at exit)")
	flag.StringVar(&o.jsonOut, "json", "", "append a JSON line of results to this file")
	flag.IntVar(&o.nodes, "nodes", 5, "number of agents")
	flag.IntVar(&o.rounds, "rounds", 20, "kill/detect rounds")
	flag.DurationVar(&o.soak, "soak", time.Minute, "soak length (nothing killed)")
	flag.DurationVar(&o.poll, "poll", 20*time.Millisecond, "API poll interval while timing a detection")
	flag.DurationVar(&o.soakPoll, "soak-poll", 100*time.Millisecond, "API poll interval during the soak and rounds (looking for false detections)")
	flag.DurationVar(&o.settle, "settle", 2*time.Second, "wait after the cluster has converged, before a round or the soak")
	flag.DurationVar(&o.timeout, "timeout", 90*time.Second, "give up on a convergence or a detection after this long")
	flag.BoolVar(&o.keep, "keep", false, "keep the work directory (agent logs)")
	flag.Parse()
	if o.label == "" {
		o.label = o.profile
	}
	if o.nodes < 3 || o.nodes > 250 || o.rounds < 0 {
		fmt.Fprintln(os.Stderr, "detectbench: need 3 <= -nodes <= 250 and -rounds >= 0")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx, o)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "detectbench:", err)
		os.Exit(1)
	}
}

// agent is one `shoal agent` process.
type agent struct {
	name, ip, dir, log string
	cmd                *exec.Cmd
	done               chan struct{} // closed when cmd has been waited for
}

type bench struct {
	o      options
	agents []*agent
	client *http.Client
	shoal  string
	nosock string
}

// result is what a run reports.
type result struct {
	Label        string    `json:"label"`
	Profile      string    `json:"profile"`
	Nodes        int       `json:"nodes"`
	Start        time.Time `json:"start"`
	SoakSeconds  float64   `json:"soak_s"`
	LoadAvg      string    `json:"loadavg_end"`
	DetectMs     []float64 `json:"detect_ms"`        // per round, by API poll
	DetectLogMs  []float64 `json:"detect_log_ms"`    // per round, by the survivors' "member fail" log lines
	FirstSuspMs  []float64 `json:"first_suspect_ms"` // per round, first survivor seeing the victim suspect (API poll)
	P50          float64   `json:"detect_p50_ms"`
	P99          float64   `json:"detect_p99_ms"`
	Max          float64   `json:"detect_max_ms"`
	SoakFalse    falseDet  `json:"soak_false"`
	RoundsFalse  falseDet  `json:"rounds_false"`
	Missed       int       `json:"missed_rounds"`
	DirectMisses int       `json:"soak_failed_udp_pings"`
}

// falseDet counts false detections.
type falseDet struct {
	PollSuspect int      `json:"poll_suspect"` // (observer, member) episodes seen suspect by API poll
	PollFailed  int      `json:"poll_failed"`  // ... seen failed
	LogSuspect  int      `json:"log_suspect"`  // "Suspect X has failed" lines
	LogRefute   int      `json:"log_refute"`   // "Refuting a suspect message" lines
	LogFailed   int      `json:"log_failed"`   // "member fail" events
	Examples    []string `json:"examples,omitempty"`
}

func (f falseDet) failures() int { return f.PollFailed + f.LogFailed }
func (f falseDet) suspicions() int {
	return f.PollSuspect + f.LogSuspect + f.LogRefute
}

func run(ctx context.Context, o options) (err error) {
	b := &bench{o: o, client: &http.Client{
		Timeout:   time.Second,
		Transport: &http.Transport{MaxIdleConnsPerHost: 4, DisableCompression: true},
	}}
	if b.shoal, err = filepath.Abs(o.shoal); err != nil {
		return err
	}
	if o.dir == "" {
		if o.dir, err = os.MkdirTemp("", "shoal-detectbench-"); err != nil {
			return err
		}
		b.o.dir = o.dir
		if !o.keep {
			defer os.RemoveAll(o.dir)
		}
	}
	b.nosock = filepath.Join(o.dir, "no-containerd.sock")
	defer b.killAll()
	for i := 1; i <= o.nodes; i++ {
		a := &agent{name: fmt.Sprintf("n%d", i), ip: fmt.Sprintf("%s.%d", o.net, i)}
		a.dir = filepath.Join(o.dir, a.name)
		a.log = filepath.Join(o.dir, a.name+".log")
		b.agents = append(b.agents, a)
		if err := b.start(a); err != nil {
			return err
		}
	}
	res := result{Label: o.label, Profile: o.profile, Nodes: o.nodes, Start: time.Now().UTC()}
	fmt.Printf("detectbench %s: %d agents on %s.1-%d, profile %q, dir %s\n",
		o.label, o.nodes, o.net, o.nodes, o.profile, o.dir)
	// The soak starts as soon as the cluster has formed: a member declared
	// failed while the agents are still busy starting counts too.
	if err := b.converge(ctx, o.soak <= 0); err != nil {
		return err
	}
	scanFrom := time.Now() // the logs are scanned without gaps from here

	// 1. Soak.
	if o.soak > 0 {
		fmt.Printf("soak: %s, nothing killed\n", o.soak)
		from := scanFrom
		sctx, cancel := context.WithTimeout(ctx, o.soak)
		seen := b.watch(sctx, b.agents, nil, o.soakPoll)
		<-sctx.Done()
		cancel()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		to := time.Now()
		res.SoakSeconds = to.Sub(from).Seconds()
		s := <-seen
		res.SoakFalse.PollSuspect, res.SoakFalse.PollFailed = s.suspect, s.failed
		res.SoakFalse.Examples = s.examples
		lf, misses, err := b.scanLogs(from, to, "")
		if err != nil {
			return err
		}
		mergeLog(&res.SoakFalse, lf)
		res.DirectMisses = misses
		scanFrom = to
		fmt.Printf("soak: %.0f s, false suspicions %d (poll %d, log suspect %d, refute %d), false failures %d (poll %d, log %d), failed direct UDP pings %d\n",
			res.SoakSeconds, res.SoakFalse.suspicions(), s.suspect, lf.LogSuspect, lf.LogRefute,
			res.SoakFalse.failures(), s.failed, lf.LogFailed, misses)
	}

	// 2. Detection rounds.
	for r := 0; r < o.rounds; r++ {
		victim := b.agents[1+r%(o.nodes-1)]
		var survivors []*agent
		for _, a := range b.agents {
			if a != victim {
				survivors = append(survivors, a)
			}
		}
		if err := b.converge(ctx, true); err != nil {
			return err
		}
		wctx, cancel := context.WithCancel(ctx)
		seen := b.watch(wctx, survivors, victim, o.soakPoll)
		time.Sleep(50 * time.Millisecond) // let the watchers' first polls (and connections) happen
		t0 := time.Now()
		if err := victim.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			cancel()
			return fmt.Errorf("kill %s: %w", victim.name, err)
		}
		<-victim.done
		d, susp, ok := b.waitFailed(ctx, survivors, victim, t0)
		cancel()
		s := <-seen
		res.RoundsFalse.PollSuspect += s.suspect
		res.RoundsFalse.PollFailed += s.failed
		res.RoundsFalse.Examples = append(res.RoundsFalse.Examples, s.examples...)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err := b.start(victim); err != nil {
			return err
		}
		if err := b.converge(ctx, false); err != nil {
			return err
		}
		// Suspicions and failures of anyone but the victim since the
		// previous round (its restart and the settling included).
		to := time.Now()
		lf, _, err := b.scanLogs(scanFrom, to, victim.name)
		if err != nil {
			return err
		}
		mergeLog(&res.RoundsFalse, lf)
		scanFrom = to
		// Read after the restart: an agent may log the failure a little
		// after its API reports it.
		logD := b.logDetect(survivors, victim, t0, to)
		if !ok {
			res.Missed++
			fmt.Printf("round %d: %s not reported failed by every survivor within %s\n", r+1, victim.name, o.timeout)
		} else {
			res.DetectMs = append(res.DetectMs, ms(d))
			res.DetectLogMs = append(res.DetectLogMs, ms(logD))
			res.FirstSuspMs = append(res.FirstSuspMs, ms(susp))
			fmt.Printf("round %d: killed %s, first suspect %4.0f ms, failed everywhere %5.0f ms (logs %5.0f ms)\n",
				r+1, victim.name, ms(susp), ms(d), ms(logD))
		}
	}
	res.LoadAvg = loadavg()
	if len(res.DetectMs) > 0 {
		res.P50, res.P99 = pct(res.DetectMs, 50), pct(res.DetectMs, 99)
		res.Max = slices.Max(res.DetectMs)
		// 0: a survivor's log line was not found (see logDetect).
		logged := slices.DeleteFunc(slices.Clone(res.DetectLogMs), func(x float64) bool { return x == 0 })
		fmt.Printf("detection (%d rounds): p50 %.0f ms, p99 %.0f ms, max %.0f ms; by logs (%d rounds) p50 %.0f ms, p99 %.0f ms\n",
			len(res.DetectMs), res.P50, res.P99, res.Max, len(logged), pct(logged, 50), pct(logged, 99))
	}
	if o.rounds > 0 {
		fmt.Printf("rounds: false suspicions %d, false failures %d, missed %d\n",
			res.RoundsFalse.suspicions(), res.RoundsFalse.failures(), res.Missed)
	}
	fmt.Printf("loadavg at end: %s\n", res.LoadAvg)
	for _, e := range append(res.SoakFalse.Examples, res.RoundsFalse.Examples...) {
		fmt.Println("  false:", e)
	}
	if o.jsonOut != "" {
		f, err := os.OpenFile(o.jsonOut, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			return err
		}
		defer f.Close()
		line, _ := json.Marshal(res)
		if _, err := f.Write(append(line, '\n')); err != nil {
			return err
		}
	}
	return nil
}

// start starts (or restarts, with the same data directory) agent a.
func (b *bench) start(a *agent) error {
	args := []string{"agent", "--name", a.name, "--bind", a.ip, "--api", a.ip + ":7070",
		"--data-dir", a.dir, "--profile", b.o.profile, "--containerd", b.nosock,
		"--log-level", "debug"}
	if a != b.agents[0] {
		args = append(args, "--join", b.agents[0].ip+":7946")
	}
	logf, err := os.OpenFile(a.log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(b.shoal, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// If this program dies without cleaning up, the kernel kills the agents.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", a.name, err)
	}
	a.cmd, a.done = cmd, make(chan struct{})
	go func(done chan struct{}) {
		_ = cmd.Wait()
		close(done)
	}(a.done)
	return nil
}

// killAll kills every agent still running, by PID, and waits for it.
func (b *bench) killAll() {
	for _, a := range b.agents {
		if a.cmd != nil {
			select {
			case <-a.done:
			default:
				_ = a.cmd.Process.Signal(syscall.SIGKILL)
				<-a.done
			}
		}
	}
}

type node struct {
	Name   string `json:"name"`
	Status string `json:"status"`
}

func (b *bench) nodes(ctx context.Context, a *agent) ([]node, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+a.ip+":7070/v1/nodes", nil)
	if err != nil {
		return nil, err
	}
	resp, err := b.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: GET /v1/nodes: %s", a.name, resp.Status)
	}
	var ns []node
	return ns, json.NewDecoder(resp.Body).Decode(&ns)
}

// converge waits until every agent reports every agent alive, then, if
// settle, for -settle more.
func (b *bench) converge(ctx context.Context, settle bool) error {
	deadline := time.Now().Add(b.o.timeout)
	for {
		ok := true
		for _, a := range b.agents {
			ns, err := b.nodes(ctx, a)
			alive := 0
			for _, n := range ns {
				if n.Status == "alive" {
					alive++
				}
			}
			if err != nil || alive != len(b.agents) {
				ok = false
				break
			}
		}
		if ok {
			break
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cluster did not converge within %s (logs in %s)", b.o.timeout, b.o.dir)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !settle {
		return nil
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(b.o.settle):
		return nil
	}
}

// seen is what watch observed.
type seen struct {
	suspect, failed int
	examples        []string
}

// watch polls observers until ctx ends and counts (observer, member)
// episodes of a member other than skip being seen suspect or failed.
func (b *bench) watch(ctx context.Context, observers []*agent, skip *agent, every time.Duration) <-chan seen {
	out := make(chan seen, 1)
	var mu sync.Mutex
	var s seen
	var wg sync.WaitGroup
	for _, a := range observers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			bad := map[string]string{} // member -> status of the current episode
			t := time.NewTicker(every)
			defer t.Stop()
			for {
				ns, err := b.nodes(ctx, a)
				if err == nil {
					for _, n := range ns {
						if skip != nil && n.Name == skip.name {
							continue
						}
						prev := bad[n.Name]
						switch {
						case n.Status == "alive":
							delete(bad, n.Name)
						case n.Status != prev && (n.Status == "suspect" || n.Status == "failed"):
							bad[n.Name] = n.Status
							mu.Lock()
							if n.Status == "suspect" {
								s.suspect++
							} else {
								s.failed++
							}
							if len(s.examples) < 10 {
								s.examples = append(s.examples, fmt.Sprintf("%s %s saw %s %s",
									time.Now().UTC().Format("15:04:05.000"), a.name, n.Name, n.Status))
							}
							mu.Unlock()
						}
					}
				}
				select {
				case <-ctx.Done():
					return
				case <-t.C:
				}
			}
		}()
	}
	go func() {
		wg.Wait()
		out <- s
	}()
	return out
}

// waitFailed polls the survivors until each reports victim failed; it
// returns the time from t0 until the last one did, and until the first one
// saw it suspect or failed.
func (b *bench) waitFailed(ctx context.Context, survivors []*agent, victim *agent, t0 time.Time) (det, susp time.Duration, ok bool) {
	ctx, cancel := context.WithTimeout(ctx, b.o.timeout)
	defer cancel()
	var mu sync.Mutex
	firstSusp := time.Duration(-1)
	failedAt := make([]time.Duration, len(survivors))
	var wg sync.WaitGroup
	for i, a := range survivors {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := time.NewTicker(b.o.poll)
			defer t.Stop()
			for {
				ns, err := b.nodes(ctx, a)
				now := time.Since(t0)
				if err == nil {
					for _, n := range ns {
						if n.Name != victim.name || n.Status == "alive" {
							continue
						}
						mu.Lock()
						if firstSusp < 0 || now < firstSusp {
							firstSusp = now
						}
						mu.Unlock()
						if n.Status == "failed" {
							failedAt[i] = now
							return
						}
					}
				}
				select {
				case <-ctx.Done():
					return
				case <-t.C:
				}
			}
		}()
	}
	wg.Wait()
	for _, d := range failedAt {
		if d == 0 {
			return 0, 0, false
		}
		det = max(det, d)
	}
	return det, firstSusp, true
}

// Log lines of interest (slog text format, see cmd/shoal/agent.go).
var (
	reTime    = regexp.MustCompile(`^time=(\S+) `)
	reSuspect = regexp.MustCompile(`msg="Suspect (\S+) has failed`)
	reRefute  = regexp.MustCompile(`msg="Refuting a (suspect|dead) message`)
	reFail    = regexp.MustCompile(`msg="member fail" .*\bmember=(\S+)`)
	reUDPMiss = regexp.MustCompile(`msg="Failed UDP ping: (\S+)`)
)

// scanLogs counts, in every agent's log between from and to, suspicions and
// failures of members other than skip, and failed direct UDP pings of them.
func (b *bench) scanLogs(from, to time.Time, skip string) (f falseDet, udpMisses int, err error) {
	for _, a := range b.agents {
		err := eachLine(a.log, from, to, func(t time.Time, line string) {
			ex := func(what string) {
				if len(f.Examples) < 10 {
					f.Examples = append(f.Examples, fmt.Sprintf("%s %s log: %s", t.Format("15:04:05.000"), a.name, what))
				}
			}
			if m := reSuspect.FindStringSubmatch(line); m != nil && m[1] != skip {
				f.LogSuspect++
				ex("suspects " + m[1])
			}
			if reRefute.MatchString(line) && a.name != skip {
				f.LogRefute++
				ex("refutes a suspicion of itself")
			}
			if m := reFail.FindStringSubmatch(line); m != nil && m[1] != skip {
				f.LogFailed++
				ex("member fail " + m[1])
			}
			if m := reUDPMiss.FindStringSubmatch(line); m != nil && m[1] != skip {
				udpMisses++
			}
		})
		if err != nil {
			return f, 0, err
		}
	}
	return f, udpMisses, nil
}

// logDetect returns the time from t0 until the last survivor logged
// "member fail" for victim (0 if one did not).
func (b *bench) logDetect(survivors []*agent, victim *agent, t0, to time.Time) time.Duration {
	var last time.Duration
	for _, a := range survivors {
		var at time.Duration
		_ = eachLine(a.log, t0, to, func(t time.Time, line string) {
			if m := reFail.FindStringSubmatch(line); m != nil && m[1] == victim.name && at == 0 {
				at = t.Sub(t0)
			}
		})
		if at == 0 {
			return 0
		}
		last = max(last, at)
	}
	return last
}

func eachLine(path string, from, to time.Time, fn func(time.Time, string)) error {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	// Log times have millisecond precision: widen the window by 1 ms.
	from, to = from.Add(-time.Millisecond), to.Add(time.Millisecond)
	for sc.Scan() {
		line := sc.Text()
		m := reTime.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		t, err := time.Parse(time.RFC3339Nano, m[1])
		if err != nil || t.Before(from) || t.After(to) {
			continue
		}
		fn(t, line)
	}
	return sc.Err()
}

func mergeLog(dst *falseDet, src falseDet) {
	dst.LogSuspect += src.LogSuspect
	dst.LogRefute += src.LogRefute
	dst.LogFailed += src.LogFailed
	dst.Examples = append(dst.Examples, src.Examples...)
	if len(dst.Examples) > 20 {
		dst.Examples = dst.Examples[:20]
	}
}

// pct is the nearest-rank percentile p of xs.
func pct(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	i := int(math.Ceil(p/100*float64(len(s)))) - 1
	return s[max(0, min(i, len(s)-1))]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}
