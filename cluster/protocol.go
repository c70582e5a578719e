package cluster

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
)

// NATS subjects and JetStream names of the fleet.
const (
	subjAPI        = "kiln.fleet.api." // + submit, cancel, queue, pools, workers, pause, …
	subjHello      = "kiln.fleet.worker.hello"
	subjBeat       = "kiln.fleet.worker.beat"
	subjDone       = "kiln.fleet.worker.done"
	subjToWorker   = "kiln.fleet.to."  // + worker + .job / .cancel
	subjLog        = "kiln.fleet.log." // + job id
	streamLogs     = "KILN_FLEET_LOGS"
	bucketJobs     = "KILN_FLEET_JOBS"
	bucketState    = "KILN_FLEET_STATE"
	bucketSources  = "KILN_FLEET_SRC"
	hdrAttempt     = "Kiln-Attempt"
	hdrEnd         = "Kiln-End"
	maxMessageSize = 8 << 20
)

// reply is the envelope of every answer the scheduler gives.
type reply struct {
	Error string          `json:"error,omitempty"`
	Data  json.RawMessage `json:"data,omitempty"`
}

func okReply(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		return errReply(err)
	}
	out, _ := json.Marshal(reply{Data: b})
	return out
}

func errReply(err error) []byte {
	out, _ := json.Marshal(reply{Error: err.Error()})
	return out
}

// RemoteError is an error the scheduler returned.
type RemoteError struct{ Msg string }

func (e *RemoteError) Error() string { return e.Msg }

func decodeReply(b []byte, v any) error {
	var r reply
	if err := json.Unmarshal(b, &r); err != nil {
		return fmt.Errorf("malformed reply from scheduler: %w", err)
	}
	if r.Error != "" {
		return &RemoteError{Msg: r.Error}
	}
	if v == nil || len(r.Data) == 0 {
		return nil
	}
	return json.Unmarshal(r.Data, v)
}

// decodeStrict reads one JSON message, refusing unknown fields and trailing data.
func decodeStrict(b []byte, v any) error {
	if len(b) == 0 {
		return errors.New("empty message")
	}
	if len(b) > maxMessageSize {
		return fmt.Errorf("message of %d bytes is larger than %d", len(b), maxMessageSize)
	}
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		return fmt.Errorf("malformed message: %w", err)
	}
	if d.More() {
		return errors.New("malformed message: data after the JSON value")
	}
	return nil
}

type helloMsg struct {
	WorkerSpec
	Token   string   `json:"token,omitempty"`
	Running []JobRef `json:"running,omitempty"`
}

type helloReply struct {
	Session  string   `json:"session"`
	LeaseTTL Duration `json:"lease_ttl"`
}

type doneMsg struct {
	Name    string `json:"name"`
	Session string `json:"session"`
	JobRef
	Result Result `json:"result"`
}

type doneReply struct {
	Accepted bool   `json:"accepted"`
	Why      string `json:"why,omitempty"`
}

type cancelMsg struct {
	JobRef
}

type nameMsg struct {
	Name string `json:"name"`
}

type rateMsg struct {
	Client string  `json:"client"`
	Rate   float64 `json:"rate"`
}

type queueMsg struct {
	Pool  string `json:"pool"`
	Limit int    `json:"limit,omitempty"`
}
