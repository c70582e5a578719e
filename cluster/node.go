package cluster

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/nats-io/nats-server/v2/server"
)

// NodeOptions configure one node of a NATS cluster with JetStream (kiln nats).
type NodeOptions struct {
	Name          string   // server name, unique in the cluster
	StoreDir      string   // JetStream data; the node's own folder
	Listen        string   // host:port for clients
	Cluster       string   // cluster name, the same on every node
	ClusterListen string   // host:port other nodes route to
	Routes        []string // nats-route://host:port of the other nodes
	Token         string   // when set, clients must present it
	Logger        *slog.Logger
}

// splitHostPort parses host:port; port 0 picks a free port.
func splitHostPort(what, addr string) (string, int, error) {
	host, portS, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, fmt.Errorf("%s address %q: %w", what, addr, err)
	}
	port, err := strconv.Atoi(portS)
	if err != nil {
		return "", 0, fmt.Errorf("%s port %q: %w", what, portS, err)
	}
	if port == 0 {
		port = server.RANDOM_PORT
	}
	return host, port, nil
}

// StartNode starts a NATS server with JetStream that joins the cluster o names.
func StartNode(o NodeOptions) (*server.Server, error) {
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	switch {
	case o.Name == "":
		return nil, errors.New("NATS node: no name (--name)")
	case o.StoreDir == "":
		return nil, fmt.Errorf("NATS node %s: no store folder (--store)", o.Name)
	case o.Cluster == "":
		return nil, fmt.Errorf("NATS node %s: no cluster name (--cluster)", o.Name)
	case o.ClusterListen == "":
		return nil, fmt.Errorf("NATS node %s: no cluster address (--cluster-listen)", o.Name)
	}
	host, port, err := splitHostPort("client", o.Listen)
	if err != nil {
		return nil, fmt.Errorf("NATS node %s: %w", o.Name, err)
	}
	chost, cport, err := splitHostPort("cluster", o.ClusterListen)
	if err != nil {
		return nil, fmt.Errorf("NATS node %s: %w", o.Name, err)
	}
	opts := natsOptions(o.Name, host, port, filepath.Clean(o.StoreDir))
	opts.Cluster = server.ClusterOpts{Name: o.Cluster, Host: chost, Port: cport}
	for _, r := range o.Routes {
		r = strings.TrimSpace(r)
		if r == "" {
			continue
		}
		u, err := url.Parse(r)
		if err != nil || u.Host == "" {
			return nil, fmt.Errorf("NATS node %s: route %q is not a URL like nats-route://host:6222", o.Name, r)
		}
		opts.Routes = append(opts.Routes, u)
	}
	opts.Authorization = o.Token
	srv, err := runNATS(opts, log)
	if err != nil {
		return nil, fmt.Errorf("NATS node %s on %s: %w", o.Name, o.Listen, err)
	}
	log.Info("NATS node started", "name", o.Name, "url", srv.ClientURL(), "cluster", o.Cluster, "routes", len(opts.Routes), "store", o.StoreDir)
	return srv, nil
}
