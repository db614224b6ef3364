package awsemu

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// config holds what the Options set.
type config struct {
	keys          map[string]string // access key ID -> secret access key
	accountID     string
	copyDelay     time.Duration
	completeDelay time.Duration
	now           func() time.Time
}

// Option configures a Server.
type Option func(*config)

// WithCredentials makes the server accept SigV4 signatures made with this access key and secret.
// It may be given more than once to accept several keys.
// Default: "AKIDAWSEMU" / "awsemu-secret".
func WithCredentials(accessKeyID, secretAccessKey string) Option {
	return func(c *config) {
		if c.keys == nil {
			c.keys = map[string]string{}
		}
		c.keys[accessKeyID] = secretAccessKey
	}
}

// WithAccountID sets the account that owns everything the server creates.
// Default: "123456789012".
func WithAccountID(id string) Option {
	return func(c *config) { c.accountID = id }
}

// WithCopyDelay sets how long an image from RegisterImage or CopyImage stays pending before it
// becomes available (and a copied snapshot pending before it is completed), and how long an
// ImportSnapshot task stays active.
// Default: 0, immediately available.
func WithCopyDelay(d time.Duration) Option {
	return func(c *config) { c.copyDelay = d }
}

// WithCompleteDelay sets how long a snapshot stays pending after a successful CompleteSnapshot
// before its status becomes completed.
// Default: 0, completed as CompleteSnapshot returns.
func WithCompleteDelay(d time.Duration) Option {
	return func(c *config) { c.completeDelay = d }
}

// withClock replaces the server's clock; tests use it to expire snapshot timeouts.
func withClock(now func() time.Time) Option {
	return func(c *config) { c.now = now }
}

// DefaultAccessKeyID and DefaultSecretAccessKey are the credentials a Server accepts unless
// WithCredentials says otherwise.
const (
	DefaultAccessKeyID     = "AKIDAWSEMU"
	DefaultSecretAccessKey = "awsemu-secret"
	DefaultAccountID       = "123456789012"
)

// Server is a local endpoint for the EC2, EBS direct, SSM and S3 calls gpuforge makes.
type Server struct {
	cfg config
	dir string

	ln  net.Listener
	srv *http.Server
	url string

	// mu guards st and every resource in it. Block data is guarded by each snapshot's blockSet.
	mu sync.Mutex
	st *state

	faults  faultSet
	stats   statsCounter
	crashed atomic.Bool

	closing  chan struct{}
	inflight sync.WaitGroup
	closed   atomic.Bool
}

var _ http.Handler = (*Server)(nil)

// Start loads the state kept under dir (creating dir if needed) and serves on a loopback port.
func Start(dir string, opts ...Option) (*Server, error) {
	cfg := config{accountID: DefaultAccountID, now: time.Now}
	for _, o := range opts {
		o(&cfg)
	}
	if len(cfg.keys) == 0 {
		cfg.keys = map[string]string{DefaultAccessKeyID: DefaultSecretAccessKey}
	}
	s := &Server{cfg: cfg, dir: dir, closing: make(chan struct{})}
	s.stats.reset()
	st, err := loadState(dir, cfg.accountID)
	if err != nil {
		return nil, fmt.Errorf("awsemu: load state from %s: %w", dir, err)
	}
	s.st = st
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		st.closeFiles()
		return nil, fmt.Errorf("awsemu: listen: %w", err)
	}
	s.ln = ln
	s.url = "http://" + ln.Addr().String()
	s.srv = &http.Server{Handler: s, ReadHeaderTimeout: 30 * time.Second, ErrorLog: nil}
	go func() { _ = s.srv.Serve(ln) }()
	return s, nil
}

// URL is the endpoint to give the SDK clients as BaseEndpoint (S3 needs UsePathStyle).
func (s *Server) URL() string { return s.url }

// Close stops serving, waits for requests in progress and closes the block files. The state stays
// on disk; Start on the same directory finds it again.
func (s *Server) Close() error {
	if !s.closed.CompareAndSwap(false, true) {
		return nil
	}
	close(s.closing)
	err := s.srv.Close()
	s.inflight.Wait()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.st.closeFiles()
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

func (s *Server) now() time.Time { return s.cfg.now().UTC() }

// call is one request on its way through the server.
type call struct {
	w         http.ResponseWriter
	r         *http.Request
	service   string // ec2, ebs, ssm, s3
	region    string
	op        string
	requestID string
	auth      *sigv4Auth
	authErr   *apiError

	body    []byte // the whole body, for the operations that are not streamed
	hasBody bool
	form    form // EC2 parameters

	// payload is the body of a streamed operation (PutSnapshotBlock, PutObject, UploadPart),
	// decoded from aws-chunked and checked against x-amz-content-sha256 as it is read.
	payload io.Reader
}

// ServeHTTP routes a request to its service by the SigV4 credential scope.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.inflight.Add(1)
	defer s.inflight.Done()
	if s.crashed.Load() {
		s.stats.rejected("")
		resetConn(w, r, 0)
		return
	}
	c := &call{w: w, r: r, requestID: newRequestID()}
	if err := s.route(c); err != nil {
		s.stats.request(c.op)
		s.stats.rejected(c.op)
		s.writeError(c, err)
		return
	}
	s.stats.request(c.op)
	switch s.faults.apply(s, c) {
	case faultHandled:
		s.stats.rejected(c.op)
		return
	case faultCrashAfter:
		defer s.crashed.Store(true)
	}
	if c.authErr != nil {
		s.stats.rejected(c.op)
		s.writeError(c, c.authErr)
		return
	}
	if err := s.verifySignature(c); err != nil {
		s.stats.rejected(c.op)
		s.writeError(c, err)
		return
	}
	if err := s.dispatch(c); err != nil {
		s.stats.rejected(c.op)
		s.writeError(c, err)
		return
	}
}

// route finds the service, region and operation of a request and reads the bodies that are not
// streamed.
func (s *Server) route(c *call) *apiError {
	r := c.r
	auth, aerr := parseAuth(r)
	if auth != nil {
		c.service, c.region = auth.service, auth.region
		c.auth = auth
	} else {
		c.service = guessService(r)
		c.region = "us-east-1"
		c.authErr = aerr
	}
	switch c.service {
	case "ec2", "ebs", "ssm", "s3":
	default:
		scoped := c.service
		c.service = guessService(r)
		return &apiError{status: http.StatusBadRequest, code: "UnknownService",
			message: fmt.Sprintf("awsemu does not emulate the service %q of the credential scope", scoped)}
	}
	if c.authErr == nil && !validRegion(c.region) {
		return &apiError{status: http.StatusBadRequest, code: "InvalidRegion",
			message: fmt.Sprintf("the region %q of the credential scope is not a region", c.region)}
	}
	switch c.service {
	case "ec2":
		return s.routeEC2(c)
	case "ebs":
		return s.routeEBS(c)
	case "ssm":
		return s.routeSSM(c)
	default:
		return s.routeS3(c)
	}
}

// guessService names the service of a request that carries no credential scope, so that its
// rejection uses the right envelope.
func guessService(r *http.Request) string {
	switch {
	case r.Header.Get("X-Amz-Target") != "":
		return "ssm"
	case len(r.URL.Path) >= len("/snapshots") && r.URL.Path[:len("/snapshots")] == "/snapshots":
		return "ebs"
	case r.Method == http.MethodPost && r.URL.Path == "/" && r.Header.Get("Content-Type") == "application/x-www-form-urlencoded":
		return "ec2"
	default:
		return "s3"
	}
}

// maxBody bounds the bodies that are read whole (EC2 and SSM parameters, EBS JSON, S3 XML).
const maxBody = 8 << 20

func (c *call) readBody() *apiError {
	if c.hasBody {
		return nil
	}
	b, err := io.ReadAll(io.LimitReader(c.r.Body, maxBody+1))
	if err != nil {
		return &apiError{status: http.StatusBadRequest, code: "IncompleteBody", message: "reading the request body: " + err.Error()}
	}
	if len(b) > maxBody {
		return &apiError{status: http.StatusRequestEntityTooLarge, code: "RequestEntityTooLarge", message: "request body too large"}
	}
	c.body, c.hasBody = b, true
	return nil
}

func (s *Server) dispatch(c *call) *apiError {
	switch c.service {
	case "ec2":
		return s.serveEC2(c)
	case "ebs":
		return s.serveEBS(c)
	case "ssm":
		return s.serveSSM(c)
	default:
		return s.serveS3(c)
	}
}

// sleep waits for d unless the request is cancelled or the server closes.
func (s *Server) sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	case <-s.closing:
		return false
	}
}

// resetConn reads up to n bytes of the request body, then closes the TCP connection with a reset
// and without a response.
func resetConn(w http.ResponseWriter, r *http.Request, n int64) {
	if n > 0 && r.Body != nil {
		_, _ = io.CopyN(io.Discard, r.Body, n)
	}
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = conn.Close()
}

func newRequestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// newID returns prefix followed by 17 hexadecimal digits, the shape of current EC2 IDs.
func newID(prefix string) string {
	var b [9]byte
	_, _ = rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])[:17]
}
