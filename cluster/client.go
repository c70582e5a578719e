package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Client submits jobs to the fleet, follows them and administers it. It is safe for
// concurrent use.
type Client struct {
	nc   *nats.Conn
	js   jetstream.JetStream
	mu   sync.Mutex // guards jobs
	jobs jetstream.KeyValue
	src  jetstream.ObjectStore
	hub  watchHub
}

// NewClient makes a client on a NATS connection.
func NewClient(nc *nats.Conn) (*Client, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	return &Client{nc: nc, js: js}, nil
}

// Conn returns the client's NATS connection.
func (c *Client) Conn() *nats.Conn { return c.nc }

func (c *Client) bucket(ctx context.Context) (jetstream.KeyValue, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.jobs != nil {
		return c.jobs, nil
	}
	kv, err := c.js.KeyValue(ctx, bucketJobs)
	if err != nil {
		return nil, fmt.Errorf("job records (is a scheduler running?): %w", err)
	}
	c.jobs = kv
	return kv, nil
}

// call sends a request to the scheduler, retrying while no scheduler answers (one may be
// restarting) until ctx ends.
func (c *Client) call(ctx context.Context, op string, req, out any) error {
	b, err := json.Marshal(req)
	if err != nil {
		return err
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Minute)
		defer cancel()
	}
	for {
		rctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		m, err := c.nc.RequestWithContext(rctx, subjAPI+op, b)
		cancel()
		if err == nil {
			return decodeReply(m.Data, out)
		}
		if !errors.Is(err, nats.ErrNoResponders) && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, nats.ErrTimeout) {
			return fmt.Errorf("%s: %w", op, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: no scheduler answered: %w", op, err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Submit queues a build and returns its record (its ID is the ticket). Resubmitting a
// request with the same ID returns the existing job.
func (c *Client) Submit(ctx context.Context, r Request) (*Job, error) {
	if r.ID == "" {
		r.ID = newID()
	}
	if err := r.Validate(); err != nil {
		return nil, fmt.Errorf("submit: %w", err)
	}
	var j Job
	if err := c.call(ctx, "submit", r, &j); err != nil {
		return nil, err
	}
	return &j, nil
}

// Job returns the stored record of a job.
func (c *Client) Job(ctx context.Context, id string) (*Job, error) {
	kv, err := c.bucket(ctx)
	if err != nil {
		return nil, err
	}
	e, err := kv.Get(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("job %s: %w", id, err)
	}
	var j Job
	if err := json.Unmarshal(e.Value(), &j); err != nil {
		return nil, fmt.Errorf("job %s: %w", id, err)
	}
	return &j, nil
}

// Result returns a finished job's result, or nil while it is queued or running.
func (c *Client) Result(ctx context.Context, id string) (*Result, error) {
	j, err := c.Job(ctx, id)
	if err != nil {
		return nil, err
	}
	return j.Result, nil
}

// Cancel asks for a job to stop; a queued job ends at once, a running one when its
// worker has stopped it.
func (c *Client) Cancel(ctx context.Context, id string) error {
	return c.call(ctx, "cancel", nameMsg{Name: id}, nil)
}

// Log writes job id's log from byte offset on to w and returns the offset after what it
// wrote. With follow it keeps going until the job ends; otherwise it stops at what is
// stored now.
func (c *Client) Log(ctx context.Context, id string, offset int64, follow bool, w io.Writer) (int64, error) {
	// without follow, read up to the log's last message when called: a fetch that does not
	// wait may come back empty from a clustered stream while messages are there
	var last uint64
	var err error
	if !follow {
		var rm *jetstream.RawStreamMsg
		err = retryTransient(ctx, func() error {
			st, err := c.js.Stream(ctx, streamLogs)
			if err == nil {
				rm, err = st.GetLastMsgForSubject(ctx, subjLog+id)
			}
			return err
		})
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return offset, nil
		} else if err != nil {
			return offset, fmt.Errorf("log of %s: %w", id, err)
		}
		last = rm.Sequence
	}
	var cons jetstream.Consumer
	err = retryTransient(ctx, func() (err error) {
		cons, err = c.js.OrderedConsumer(ctx, streamLogs, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subjLog + id}})
		return err
	})
	if err != nil {
		return offset, fmt.Errorf("log of %s: %w", id, err)
	}
	var pos int64
	for {
		m, err := cons.Next(jetstream.FetchMaxWait(time.Second))
		if err != nil {
			if errors.Is(err, jetstream.ErrMsgNotFound) || transient(err) {
				if ctx.Err() != nil {
					return max(pos, offset), ctx.Err()
				}
				continue
			}
			return max(pos, offset), fmt.Errorf("log of %s: %w", id, err)
		}
		if m.Headers().Get(hdrEnd) != "" {
			return max(pos, offset), nil
		}
		d := m.Data()
		end := pos + int64(len(d))
		if end > offset {
			skip := max(0, offset-pos)
			if _, err := w.Write(d[skip:]); err != nil {
				return pos + skip, err
			}
		}
		pos = end
		if !follow && isLast(m, last) {
			return max(pos, offset), nil
		}
	}
}

// retryTransient runs f again while it fails because JetStream has no leader to answer
// (a NATS node was lost and the cluster elects another), until ctx ends.
func retryTransient(ctx context.Context, f func() error) error {
	for {
		err := f()
		if !transient(err) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// transient says whether err may pass once JetStream has a leader again.
func transient(err error) bool {
	return errors.Is(err, nats.ErrNoResponders) || errors.Is(err, nats.ErrTimeout) || errors.Is(err, context.DeadlineExceeded)
}

// isLast says whether m is at or past the stream sequence last.
func isLast(m jetstream.Msg, last uint64) bool {
	meta, err := m.Metadata()
	return err == nil && meta.Sequence.Stream >= last
}

// Pools lists the pools with their workers and queues.
func (c *Client) Pools(ctx context.Context) ([]PoolInfo, error) {
	var out []PoolInfo
	return out, c.call(ctx, "pools", struct{}{}, &out)
}

// Workers lists the workers the scheduler knows.
func (c *Client) Workers(ctx context.Context) ([]WorkerInfo, error) {
	var out []WorkerInfo
	return out, c.call(ctx, "workers", struct{}{}, &out)
}

// Queue lists a pool's running jobs and its queue (up to limit entries) with each job's
// position, estimated start and why it waits.
func (c *Client) Queue(ctx context.Context, pool string, limit int) (*QueueInfo, error) {
	var out QueueInfo
	return &out, c.call(ctx, "queue", queueMsg{Pool: pool, Limit: limit}, &out)
}

// Pause stops giving jobs to a worker; its running jobs finish (drain).
func (c *Client) Pause(ctx context.Context, worker string) error {
	return c.call(ctx, "pause", nameMsg{Name: worker}, nil)
}

// Unpause lets a paused worker take jobs again.
func (c *Client) Unpause(ctx context.Context, worker string) error {
	return c.call(ctx, "unpause", nameMsg{Name: worker}, nil)
}

// Forget drops a worker from the scheduler's records, re-queueing its jobs.
func (c *Client) Forget(ctx context.Context, worker string) error {
	return c.call(ctx, "forget", nameMsg{Name: worker}, nil)
}

// SetRate sets a client's share of the fleet relative to others (default 1).
func (c *Client) SetRate(ctx context.Context, client string, rate float64) error {
	return c.call(ctx, "set-rate", rateMsg{Client: client, Rate: rate}, nil)
}

// Restart drains a worker and has it restart itself (re-executing its binary) when idle.
func (c *Client) Restart(ctx context.Context, worker string) error {
	return c.call(ctx, "restart", nameMsg{Name: worker}, nil)
}

// Worker returns one worker's record.
func (c *Client) Worker(ctx context.Context, name string) (*WorkerInfo, error) {
	ws, err := c.Workers(ctx)
	if err != nil {
		return nil, err
	}
	for i := range ws {
		if ws[i].Name == name {
			return &ws[i], nil
		}
	}
	return nil, fmt.Errorf("%w %q", errUnknownWorker, name)
}

// WaitDrained waits until a worker runs no job.
func (c *Client) WaitDrained(ctx context.Context, name string) error {
	for {
		w, err := c.Worker(ctx, name)
		if err != nil {
			return err
		}
		if len(w.Running) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("drain %s: %w", name, ctx.Err())
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// UpdatePool restarts a pool's workers one at a time, each after draining: first one, and
// once it is back, the rest. progress is told about each step.
func (c *Client) UpdatePool(ctx context.Context, pool string, progress func(string)) error {
	ws, err := c.Workers(ctx)
	if err != nil {
		return err
	}
	var names []string
	for _, w := range ws {
		if w.Pool == pool && w.State != "gone" {
			names = append(names, w.Name)
		}
	}
	if len(names) == 0 {
		return fmt.Errorf("update %s: no worker in the pool", pool)
	}
	for i, name := range names {
		before, err := c.Worker(ctx, name)
		if err != nil {
			return err
		}
		progress(fmt.Sprintf("%d/%d: draining and restarting %s", i+1, len(names), name))
		if err := c.Restart(ctx, name); err != nil {
			return fmt.Errorf("update %s: %w", name, err)
		}
		for {
			w, err := c.Worker(ctx, name)
			if err == nil && w.Instance != before.Instance && w.State != "gone" && w.State != "updating" {
				break
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("update %s: %s did not come back: %w", pool, name, ctx.Err())
			case <-time.After(250 * time.Millisecond):
			}
		}
		progress(fmt.Sprintf("%d/%d: %s is back", i+1, len(names), name))
	}
	return nil
}

func itoa(i int) string { return strconv.Itoa(i) }
