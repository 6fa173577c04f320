package linkem

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"
)

const maxBody = 1 << 20

// Handler serves the control API for this relay. It lets the lab CLI, running in another process and network
// namespace, change a relay while traffic flows. It is plain HTTP on a unix
// socket (reachable across namespaces through the file system):
//
//	GET  /params[?dir=up|down]   {"up":{...},"down":{...}} or one Params
//	POST /params[?dir=up|down]   JSON Params; only the fields present change;
//	                             no dir: both directions. Returns GET's answer.
//	POST /blackhole?on=1|0       both directions
//	GET  /stats                  Stats
//	POST /trace?dir=up|down      body: a trace file (ParseTrace); the rate
//	                             follows it from now; an empty body stops it
//
// Params in JSON: {"rate":20000000 or "20mbit","delay":"2.5ms","buffer":
// 4000000,"loss":0.05,"blackhole":false,"overhead":28}.
// Serve puts several relays on one socket, each under /<name>/.
func (r *Relay) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /params", r.getParams)
	mux.HandleFunc("POST /params", r.postParams)
	mux.HandleFunc("POST /blackhole", r.postBlackhole)
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, r.Stats()) })
	mux.HandleFunc("POST /trace", r.postTrace)
	return mux
}

// dirs returns the directions named by ?dir=, both when absent.
func dirs(req *http.Request) ([]Direction, error) {
	s := req.URL.Query().Get("dir")
	if s == "" {
		return []Direction{Up, Down}, nil
	}
	d, err := ParseDirection(s)
	if err != nil {
		return nil, fmt.Errorf("query dir: %w", err)
	}
	return []Direction{d}, nil
}

type bothParams struct {
	Up   Params `json:"up"`
	Down Params `json:"down"`
}

func (r *Relay) getParams(w http.ResponseWriter, req *http.Request) {
	if req.URL.Query().Get("dir") != "" {
		ds, err := dirs(req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		writeJSON(w, r.Params(ds[0]))
		return
	}
	writeJSON(w, bothParams{r.Params(Up), r.Params(Down)})
}

func (r *Relay) postParams(w http.ResponseWriter, req *http.Request) {
	ds, err := dirs(req)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	body, err := io.ReadAll(io.LimitReader(req.Body, maxBody))
	if err != nil {
		http.Error(w, fmt.Sprintf("reading body: %v", err), http.StatusBadRequest)
		return
	}
	// Check the patch against every direction before changing any.
	for _, d := range ds {
		p := r.Params(d)
		if err := json.Unmarshal(body, &p); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if err := p.Validate(); err != nil {
			http.Error(w, fmt.Sprintf("params %v: %v", d, err), http.StatusBadRequest)
			return
		}
	}
	for _, d := range ds {
		// Decoding again under the link's lock applies only the fields
		// present to the current value; it cannot fail after the check.
		r.update(d, func(p *Params) { _ = json.Unmarshal(body, p) })
	}
	writeJSON(w, bothParams{r.Params(Up), r.Params(Down)})
}

func (r *Relay) postBlackhole(w http.ResponseWriter, req *http.Request) {
	on, err := strconv.ParseBool(req.URL.Query().Get("on"))
	if err != nil {
		http.Error(w, fmt.Sprintf("query on %q: want 1 or 0", req.URL.Query().Get("on")), http.StatusBadRequest)
		return
	}
	r.Blackhole(on)
	writeJSON(w, bothParams{r.Params(Up), r.Params(Down)})
}

func (r *Relay) postTrace(w http.ResponseWriter, req *http.Request) {
	ds, err := dirs(req)
	if err != nil || len(ds) != 1 {
		http.Error(w, "query dir: want up or down", http.StatusBadRequest)
		return
	}
	body, err := io.ReadAll(io.LimitReader(req.Body, maxBody))
	if err != nil {
		http.Error(w, fmt.Sprintf("reading body: %v", err), http.StatusBadRequest)
		return
	}
	var tr Trace
	if len(bytes.TrimSpace(body)) > 0 {
		if tr, err = ParseTrace(bytes.NewReader(body)); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
	}
	r.startTrace(ds[0], tr)
	w.WriteHeader(http.StatusNoContent)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

// Mux serves several relays, each under /<name>/; GET / lists the names.
func Mux(relays map[string]*Relay) http.Handler {
	mux := http.NewServeMux()
	names := make([]string, 0, len(relays))
	for name, r := range relays {
		names = append(names, name)
		prefix := "/" + name
		mux.Handle(prefix+"/", http.StripPrefix(prefix, r.Handler()))
	}
	sort.Strings(names)
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, names) })
	return mux
}

// Serve serves Mux(relays) on a unix socket at socketPath until ctx ends,
// replacing a stale socket file and removing it afterwards. Names must be
// non-empty and free of '/'.
func Serve(ctx context.Context, socketPath string, relays map[string]*Relay) error {
	for name := range relays {
		if name == "" || strings.ContainsAny(name, "/?#%") {
			return fmt.Errorf("Serve: relay name %q: want a non-empty name without / ? # %%", name)
		}
	}
	if err := os.Remove(socketPath); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("Remove(%s): %w", socketPath, err)
	}
	ln, err := net.Listen("unix", socketPath)
	if err != nil {
		return fmt.Errorf("Listen(unix, %s): %w", socketPath, err)
	}
	defer os.Remove(socketPath)
	srv := &http.Server{Handler: Mux(relays), ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	err = srv.Serve(ln)
	<-done
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return fmt.Errorf("Serve(%s): %w", socketPath, err)
}

// Client drives a relay's control API over a unix socket.
type Client struct {
	hc     *http.Client
	socket string
	prefix string
}

// NewClient talks to a socket serving Relay.Handler at its root; use
// Relay(name) for a socket from Serve.
func NewClient(socketPath string) *Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socketPath)
		},
	}
	return &Client{hc: &http.Client{Transport: tr, Timeout: 10 * time.Second}, socket: socketPath}
}

// Relay returns a client for the relay Serve put under name.
func (c *Client) Relay(name string) *Client {
	cc := *c
	cc.prefix = c.prefix + "/" + url.PathEscape(name)
	return &cc
}

func (c *Client) do(ctx context.Context, method, path string, query url.Values, body []byte, out any) error {
	u := "http://linkem" + c.prefix + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("linkem %s %s: %w", method, u, err)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("linkem %s %s%s via %s: %w", method, c.prefix, path, c.socket, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return fmt.Errorf("linkem %s %s%s: reading answer: %w", method, c.prefix, path, err)
	}
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("linkem %s %s%s: %s: %s", method, c.prefix, path, resp.Status, strings.TrimSpace(string(data)))
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("linkem %s %s%s: decoding answer: %w", method, c.prefix, path, err)
		}
	}
	return nil
}

func dirQuery(d Direction) url.Values { return url.Values{"dir": {d.String()}} }

// Params reads one direction's parameters.
func (c *Client) Params(ctx context.Context, d Direction) (Params, error) {
	var p Params
	err := c.do(ctx, http.MethodGet, "/params", dirQuery(d), nil, &p)
	return p, err
}

// Set replaces one direction's parameters.
func (c *Client) Set(ctx context.Context, d Direction, p Params) error {
	body, err := json.Marshal(p)
	if err != nil {
		return err
	}
	return c.do(ctx, http.MethodPost, "/params", dirQuery(d), body, nil)
}

// Update changes only the fields present in patch (JSON field names, see
// the control API) in one direction.
func (c *Client) Update(ctx context.Context, d Direction, patch map[string]any) error {
	body, err := json.Marshal(patch)
	if err != nil {
		return fmt.Errorf("linkem update %v: %w", patch, err)
	}
	return c.do(ctx, http.MethodPost, "/params", dirQuery(d), body, nil)
}

// SetRate changes one direction's line rate only.
func (c *Client) SetRate(ctx context.Context, d Direction, rate uint64) error {
	return c.Update(ctx, d, map[string]any{"rate": rate})
}

// SetLoss changes one direction's random loss only.
func (c *Client) SetLoss(ctx context.Context, d Direction, loss float64) error {
	return c.Update(ctx, d, map[string]any{"loss": loss})
}

// Blackhole switches the blackhole in both directions.
func (c *Client) Blackhole(ctx context.Context, on bool) error {
	v := "0"
	if on {
		v = "1"
	}
	return c.do(ctx, http.MethodPost, "/blackhole", url.Values{"on": {v}}, nil, nil)
}

// Stats reads the relay's counters.
func (c *Client) Stats(ctx context.Context) (Stats, error) {
	var s Stats
	err := c.do(ctx, http.MethodGet, "/stats", nil, nil, &s)
	return s, err
}

// FollowTrace makes d's rate follow tr from now on, in the relay's process.
func (c *Client) FollowTrace(ctx context.Context, d Direction, tr Trace) error {
	if len(tr) == 0 {
		return errors.New("linkem FollowTrace: empty trace (use StopTrace)")
	}
	return c.do(ctx, http.MethodPost, "/trace", dirQuery(d), []byte(tr.String()), nil)
}

// StopTrace stops a trace started with FollowTrace; the rate stays.
func (c *Client) StopTrace(ctx context.Context, d Direction) error {
	return c.do(ctx, http.MethodPost, "/trace", dirQuery(d), nil, nil)
}

// String writes the trace in the format ParseTrace reads.
func (tr Trace) String() string {
	var b strings.Builder
	for _, s := range tr {
		fmt.Fprintf(&b, "%s %dbit\n", strconv.FormatFloat(s.At.Seconds(), 'f', -1, 64), s.Rate)
	}
	return b.String()
}
