// Package natstest runs a real nats-server with JetStream inside a test
// process, on a loopback port and a temporary store directory.
package natstest

import (
	"net"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Server is an embedded nats-server that a test can restart on the same port
// and store, as an operator would restart theirs.
type Server struct {
	t    testing.TB
	opts server.Options
	*server.Server
}

// Start runs a JetStream server on a free loopback port with its store in a
// fresh temporary directory; it is shut down when the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	s := &Server{t: t, opts: server.Options{
		Host:      "127.0.0.1",
		Port:      server.RANDOM_PORT,
		JetStream: true,
		StoreDir:  t.TempDir(),
		NoLog:     true,
		NoSigs:    true,
	}}
	s.start()
	// Keep the port across restarts.
	s.opts.Port = s.Addr().(*net.TCPAddr).Port
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	return s
}

func (s *Server) start() {
	s.t.Helper()
	ns, err := server.NewServer(&s.opts)
	if err != nil {
		s.t.Fatalf("nats-server: %v", err)
	}
	ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		s.t.Fatal("nats-server: not ready after 10s")
	}
	s.Server = ns
}

// Restart shuts the server down and starts it again on the same port and
// store; clients that reconnect find their streams and consumers again.
func (s *Server) Restart() {
	s.t.Helper()
	s.Down()
	s.Up()
}

// Down shuts the server down, as a crash of the bus would; Up brings it
// back on the same port and store.
func (s *Server) Down() {
	s.Shutdown()
	s.WaitForShutdown()
}

// Up starts a server that Down shut down.
func (s *Server) Up() {
	s.t.Helper()
	s.start()
}

// Connect returns a client connection that reconnects forever, closed when
// the test ends.
func (s *Server) Connect() (*nats.Conn, jetstream.JetStream) {
	s.t.Helper()
	nc, err := nats.Connect(s.ClientURL(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		s.t.Fatalf("connect: %v", err)
	}
	s.t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		s.t.Fatalf("jetstream: %v", err)
	}
	return nc, js
}
