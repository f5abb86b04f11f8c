package daemon

// The NATS connection of the front end: an embedded nats-server (the
// default: in-process connection, no port unless NATSOptions.Listen; a
// leaf-node remote when LeafRemote is set) or an external server
// (NATSOptions.URL, with a credentials file, an NKey seed and TLS).

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/edged/edged/protocol"
)

// natsReadyTimeout bounds the wait for the embedded server to accept
// connections.
const natsReadyTimeout = 10 * time.Second

// natsConn is a connection and, when embedded, its server.
type natsConn struct {
	nc *nats.Conn
	ns *server.Server // nil with an external server
}

// dialNATS connects as o says. The external connection retries in the
// background when the server is down at start (the daemon keeps serving
// the socket meanwhile); the embedded server must start.
func dialNATS(ctx context.Context, o NATSOptions, node string, log *slog.Logger) (*natsConn, error) {
	copts := []nats.Option{
		nats.Name("edged " + node),
		nats.MaxReconnects(-1),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("nats: disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) { log.Info("nats: reconnected", "url", c.ConnectedUrlRedacted()) }),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			subj := ""
			if sub != nil {
				subj = sub.Subject
			}
			log.Warn("nats: async error", "subject", subj, "err", err)
		}),
	}
	if o.URL != "" {
		auth, err := natsAuthOptions(o)
		if err != nil {
			return nil, err
		}
		copts = append(copts, auth...)
		copts = append(copts, nats.RetryOnFailedConnect(true))
		nc, err := nats.Connect(o.URL, copts...)
		if err != nil {
			return nil, fmt.Errorf("nats: connect %s: %w", o.URL, err)
		}
		if !nc.IsConnected() {
			log.Warn("nats: server not reachable yet; retrying in the background", "url", o.URL)
		}
		return &natsConn{nc: nc}, nil
	}

	sopts, err := embeddedServerOptions(o, node)
	if err != nil {
		return nil, err
	}
	ns, err := server.NewServer(sopts)
	if err != nil {
		return nil, fmt.Errorf("nats: embedded server: %w", err)
	}
	ns.SetLoggerV2(natsLogger{log.With("component", "nats-server")}, false, false, false)
	ns.Start()
	if !ns.ReadyForConnections(natsReadyTimeout) {
		ns.Shutdown()
		return nil, fmt.Errorf("nats: embedded server not ready after %v (listen %q)", natsReadyTimeout, o.Listen)
	}
	copts = append(copts, nats.InProcessServer(ns))
	nc, err := nats.Connect("", copts...)
	if err != nil {
		ns.Shutdown()
		return nil, fmt.Errorf("nats: in-process connection: %w", err)
	}
	if o.Listen != "" {
		log.Info("nats: embedded server listening", "url", ns.ClientURL())
	}
	return &natsConn{nc: nc, ns: ns}, nil
}

// natsAuthOptions turns the credentials, NKey and TLS settings into
// client options.
func natsAuthOptions(o NATSOptions) ([]nats.Option, error) {
	var out []nats.Option
	if o.Credentials != "" {
		out = append(out, nats.UserCredentials(o.Credentials))
	}
	if o.NKey != "" {
		opt, err := nats.NkeyOptionFromSeed(o.NKey)
		if err != nil {
			return nil, fmt.Errorf("nats: nkey %s: %w", o.NKey, err)
		}
		out = append(out, opt)
	}
	if o.TLSCA != "" {
		out = append(out, nats.RootCAs(o.TLSCA))
	}
	if (o.TLSCert == "") != (o.TLSKey == "") {
		return nil, fmt.Errorf("nats: tls_cert and tls_key go together")
	}
	if o.TLSCert != "" {
		out = append(out, nats.ClientCert(o.TLSCert, o.TLSKey))
	}
	return out, nil
}

// embeddedServerOptions configures the embedded server: no listener unless
// o.Listen, a leaf-node remote when o.LeafRemote (authenticated with
// o.Credentials or o.NKey, verified with o.TLSCA), and JetStream for the
// edit stream and the fleet's adapter versions.
func embeddedServerOptions(o NATSOptions, node string) (*server.Options, error) {
	so := &server.Options{
		ServerName: "edged-" + node,
		NoSigs:     true,
		DontListen: o.Listen == "",
		// A request body may be as large as the socket API accepts.
		MaxPayload: protocol.MaxBodyBytes,
		// No HTTP monitoring, no cluster.
	}
	// JetStream for the edit stream and the adapter versions. Its file
	// store syncs every write: edits are few, and a publisher's
	// acknowledgement should mean that the edit survives a power cut,
	// not only a crash. Behind a leaf-node remote the server keeps its
	// clients' JetStream API traffic off the leaf connection, so this
	// JetStream stays the node's own, while edits published on the hub
	// still reach its stream (TestEditsThroughLeafNode).
	so.JetStream, so.StoreDir, so.SyncAlways = true, o.JetStreamDir, true
	so.JetStreamMaxMemory, so.JetStreamMaxStore = o.JetStreamMaxMemory, o.JetStreamMaxStore
	if o.Listen != "" {
		host, port, err := net.SplitHostPort(o.Listen)
		if err != nil {
			return nil, fmt.Errorf("nats: listen %q: want HOST:PORT: %w", o.Listen, err)
		}
		p, err := strconv.Atoi(port)
		if err != nil || p < 0 || p > 65535 {
			return nil, fmt.Errorf("nats: listen %q: bad port", o.Listen)
		}
		if p == 0 {
			p = server.RANDOM_PORT
		}
		so.Host, so.Port = host, p
	}
	if o.LeafRemote != "" {
		var urls []*url.URL
		for _, s := range strings.Split(o.LeafRemote, ",") {
			u, err := url.Parse(strings.TrimSpace(s))
			if err != nil || u.Host == "" {
				return nil, fmt.Errorf("nats: leaf_remote %q: want nats://HOST:PORT or tls://HOST:PORT", s)
			}
			urls = append(urls, u)
		}
		remote := &server.RemoteLeafOpts{URLs: urls, Credentials: o.Credentials}
		if o.NKey != "" {
			remote.Nkey = o.NKey
		}
		if o.TLSCA != "" || o.TLSCert != "" || urls[0].Scheme == "tls" {
			tc, err := clientTLSConfig(o)
			if err != nil {
				return nil, fmt.Errorf("nats: leaf_remote TLS: %w", err)
			}
			remote.TLS, remote.TLSConfig = true, tc
		}
		so.LeafNode.Remotes = []*server.RemoteLeafOpts{remote}
		so.LeafNode.ReconnectInterval = 5 * time.Second
	}
	return so, nil
}

// clientTLSConfig is the TLS configuration of a client of o's servers: the
// CA bundle to verify them and a client certificate.
func clientTLSConfig(o NATSOptions) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if o.TLSCA != "" {
		pem, err := os.ReadFile(o.TLSCA)
		if err != nil {
			return nil, err
		}
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s: no PEM certificate", o.TLSCA)
		}
	}
	if (o.TLSCert == "") != (o.TLSKey == "") {
		return nil, fmt.Errorf("tls_cert and tls_key go together")
	}
	if o.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(o.TLSCert, o.TLSKey)
		if err != nil {
			return nil, err
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// close drains the connection (pending replies are flushed) and stops the
// embedded server.
func (c *natsConn) close(ctx context.Context) {
	if c.nc != nil {
		done := make(chan struct{})
		c.nc.SetClosedHandler(func(*nats.Conn) { close(done) })
		if err := c.nc.Drain(); err != nil {
			c.nc.Close()
		}
		select {
		case <-done:
		case <-ctx.Done():
			c.nc.Close()
		}
	}
	if c.ns != nil {
		c.ns.Shutdown()
		c.ns.WaitForShutdown()
	}
}

// natsLogger sends nats-server's log to slog. Fatalf only logs: the server
// reports the failure through its own return values, and nothing below
// main exits the process.
type natsLogger struct{ log *slog.Logger }

func (l natsLogger) Noticef(format string, v ...any) { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l natsLogger) Warnf(format string, v ...any)   { l.log.Warn(fmt.Sprintf(format, v...)) }
func (l natsLogger) Fatalf(format string, v ...any)  { l.log.Error(fmt.Sprintf(format, v...)) }
func (l natsLogger) Errorf(format string, v ...any)  { l.log.Error(fmt.Sprintf(format, v...)) }
func (l natsLogger) Debugf(format string, v ...any)  { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l natsLogger) Tracef(format string, v ...any)  { l.log.Debug(fmt.Sprintf(format, v...)) }
