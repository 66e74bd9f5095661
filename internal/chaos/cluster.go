package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	oaclient "github.com/openagent/orchestrator/pkg/client"
	"github.com/openagent/orchestrator/pkg/creds"
	"github.com/openagent/orchestrator/pkg/driver"
	"github.com/openagent/orchestrator/pkg/events"
)

// The deployment as deploy/compose.yaml makes it.
var (
	orchestrators = map[string]string{"orchestrator-1": "http://127.0.0.1:18081", "orchestrator-2": "http://127.0.0.1:18082"}
	workers       = []string{"worker-1", "worker-2"}
	natsNodes     = []string{"nats-1", "nats-2", "nats-3"}
	natsURLs      = "nats://127.0.0.1:14222,nats://127.0.0.1:14223,nats://127.0.0.1:14224"
	busNetwork    = "openagent_bus"
)

// container is a service's container name.
func containerName(service string) string { return "openagent-" + service }

// cluster is the suite's hold on the deployment: the Docker Engine that runs
// it, the bus as a service sees it, and the HTTP API as an admin sees it.
type cluster struct {
	state  string
	docker *client.Client
	nc     *nats.Conn
	js     jetstream.JetStream
	token  string
	http   *http.Client
}

func dial(ctx context.Context, state string) (*cluster, error) {
	c := &cluster{state: state, http: &http.Client{Timeout: 3 * time.Second}}
	var err error
	if c.docker, err = client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation()); err != nil {
		return nil, err
	}
	if _, err := c.docker.Ping(ctx); err != nil {
		return nil, fmt.Errorf("the Docker Engine does not answer: %w", err)
	}
	token, err := os.ReadFile(filepath.Join(state, "authority", "admin.token"))
	if err != nil {
		return nil, fmt.Errorf("the deployment's admin token: %w (is it up? make deploy-up)", err)
	}
	c.token = strings.TrimSpace(string(token))
	opts, err := creds.NATSOptions(filepath.Join(state, "bus", "service.creds"))
	if err != nil {
		return nil, err
	}
	opts = append(opts, nats.Name("openagent-chaos"), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if c.nc, err = creds.Dial(natsURLs, time.Minute, opts...); err != nil {
		return nil, fmt.Errorf("connect to the deployment's NATS: %w", err)
	}
	if c.js, err = jetstream.New(c.nc); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *cluster) close() {
	c.nc.Close()
	c.docker.Close()
}

// api is the SDK on one orchestrator.
func (c *cluster) api(name string) *oaclient.Client {
	return oaclient.New(orchestrators[name], oaclient.WithToken(c.token), oaclient.WithHTTPClient(c.http))
}

// health is what an orchestrator's /healthz says; role "" when it does
// not answer.
type health struct {
	Role, ID, Leader, Status string
}

func (c *cluster) health(ctx context.Context, name string) health {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, orchestrators[name]+"/healthz", nil)
	res, err := c.http.Do(req)
	if err != nil {
		return health{}
	}
	defer res.Body.Close()
	var h health
	if res.StatusCode != http.StatusOK || json.NewDecoder(res.Body).Decode(&h) != nil {
		return health{}
	}
	return h
}

// leader is the orchestrator that says it leads and is named by the
// other; "" while there is none.
func (c *cluster) leader(ctx context.Context) string {
	var leading []string
	for name := range orchestrators {
		if c.health(ctx, name).Role == "leader" {
			leading = append(leading, name)
		}
	}
	if len(leading) != 1 {
		return ""
	}
	return leading[0]
}

// ready waits for the deployment to serve: every orchestrator answering,
// one leading, every worker live.
func (c *cluster) ready(ctx context.Context, within time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	for {
		why := c.notReady(ctx)
		if why == "" {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("not ready after %v: %s", within, why)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func (c *cluster) notReady(ctx context.Context) string {
	for name := range orchestrators {
		if c.health(ctx, name).Role == "" {
			return name + " does not answer /healthz"
		}
	}
	leader := c.leader(ctx)
	if leader == "" {
		return "no single leader"
	}
	// Three replicas of everything; the orchestrator refuses fewer.
	st, err := c.js.Stream(ctx, events.StreamEvents)
	if err != nil {
		return "the events stream: " + err.Error()
	}
	if n := st.CachedInfo().Config.Replicas; n != 3 {
		return fmt.Sprintf("the events stream has %d replicas, not 3", n)
	}
	hosts, err := c.api(leader).Hosts(ctx)
	if err != nil {
		return "hosts: " + err.Error()
	}
	live := map[string]bool{}
	for _, h := range hosts {
		live[h.ID] = h.Live && h.LostAt.IsZero()
	}
	for _, w := range workers {
		if !live[w] {
			return w + " is not live"
		}
	}
	return ""
}

// kill sends a signal to a service's main process, as kill(1) would.
func (c *cluster) kill(ctx context.Context, service, signal string) error {
	return c.docker.ContainerKill(ctx, containerName(service), signal)
}

// start starts a service's container again; one already running is left.
func (c *cluster) start(ctx context.Context, service string) error {
	return c.docker.ContainerStart(ctx, containerName(service), container.StartOptions{})
}

// stop stops a service's container: SIGTERM, then SIGKILL after timeout.
func (c *cluster) stop(ctx context.Context, service string, timeout time.Duration) error {
	secs := int(timeout.Seconds())
	return c.docker.ContainerStop(ctx, containerName(service), container.StopOptions{Timeout: &secs})
}

// disconnect cuts a service off the bus's network; connect heals it.
func (c *cluster) disconnect(ctx context.Context, service string) error {
	return c.docker.NetworkDisconnect(ctx, busNetwork, containerName(service), true)
}

func (c *cluster) connect(ctx context.Context, service string) error {
	return c.docker.NetworkConnect(ctx, busNetwork, containerName(service), &network.EndpointSettings{Aliases: []string{service}})
}

// runtimes lists every container each worker's runtime holds, by the
// scope each worker's docker driver keeps in its state.
func (c *cluster) runtimes(ctx context.Context) ([]copyOf, error) {
	var out []copyOf
	for _, w := range workers {
		b, err := os.ReadFile(filepath.Join(c.state, w, "docker", "scope"))
		if err != nil {
			return nil, fmt.Errorf("%s's driver scope: %w", w, err)
		}
		list, err := c.docker.ContainerList(ctx, container.ListOptions{All: true,
			Filters: filters.NewArgs(filters.Arg("label", driver.LabelScope+"="+strings.TrimSpace(string(b))))})
		if err != nil {
			return nil, err
		}
		for _, ct := range list {
			out = append(out, copyOf{id: ct.Labels[driver.LabelContainerID], host: w, running: ct.State == "running"})
		}
	}
	return out, nil
}

// publishCreate publishes a create request as a service would (on host,
// if not ""), the same
// id again until JetStream acknowledges it (the stream keeps it once), for
// at most giveUp. It records the attempt and the acknowledgement.
func (c *cluster) publishCreate(ctx context.Context, h *history, id, host string, giveUp time.Duration) {
	req := map[string]any{"driver": "docker", "start": true, "reschedule": map[string]any{"policy": "always"},
		"spec": map[string]any{"image": "openagent/sandbox:shell", "command": []string{"sleep", "3600"},
			"labels":    map[string]string{"io.openagent.chaos": "1"},
			"resources": map[string]any{"cpu": 0.05, "memoryMB": 16, "pids": 8}}}
	if host != "" {
		req["hostId"] = host
	}
	e, err := events.New(events.ContainerCreateRequested, "/chaos", req, events.WithID(id))
	if err != nil {
		panic(err) // the request is the suite's own: a bug here
	}
	m, err := events.ToMsg(events.RequestsRoot+"."+events.Name(e.Type()), e)
	if err != nil {
		panic(err)
	}
	h.attempt(id)
	deadline := time.Now().Add(giveUp)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		actx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err = c.js.PublishMsg(actx, m, jetstream.WithMsgID(id))
		cancel()
		if err == nil {
			h.ack(id)
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// remove removes containers through the API, forcing them; the last error
// is returned.
func (c *cluster) remove(ctx context.Context, ids []string) error {
	var last error
	for _, id := range ids {
		for _, o := range []string{"orchestrator-1", "orchestrator-2"} {
			err := c.api(o).Remove(ctx, id, true)
			if err == nil || errors.Is(err, driver.ErrNotFound) {
				last = nil
				break
			}
			last = fmt.Errorf("remove %s: %w", id, err)
		}
	}
	return last
}
