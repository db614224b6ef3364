package awsemu

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"sync"
	"time"
)

// FaultKind is what an injected fault does to a request.
type FaultKind int

const (
	// FaultThrottle answers with the service's throttling error: EBS RequestThrottledException
	// (PutSnapshotBlock, GetSnapshotBlock) or ThrottlingException, both 400 as EBS documents them;
	// EC2 RequestLimitExceeded 503; SSM ThrottlingException 400; S3 SlowDown 503.
	FaultThrottle FaultKind = iota + 1
	// FaultServerError answers 500 with the service's internal error (EC2 and S3 InternalError,
	// EBS InternalServerException, SSM InternalServerError).
	FaultServerError
	// FaultReset reads part of the request body, then closes the TCP connection with a reset and
	// no response.
	FaultReset
	// FaultAccessDenied answers with the service's authorization error naming the operation and
	// the resource: EBS AccessDeniedException 403, EC2 UnauthorizedOperation 403, SSM
	// AccessDeniedException 400, S3 AccessDenied 403.
	FaultAccessDenied
	// FaultLatency delays the request by Latency, then serves it.
	FaultLatency
	// FaultCrash serves the request, then fails every later request (the connection is closed
	// without a response) as if the process had died, until ClearFaults.
	FaultCrash
)

func (k FaultKind) String() string {
	switch k {
	case FaultThrottle:
		return "throttle"
	case FaultServerError:
		return "server-error"
	case FaultReset:
		return "reset"
	case FaultAccessDenied:
		return "access-denied"
	case FaultLatency:
		return "latency"
	case FaultCrash:
		return "crash"
	}
	return fmt.Sprintf("FaultKind(%d)", int(k))
}

// Fault is a misbehaviour the server applies to the requests of one operation.
type Fault struct {
	// Op is the operation as AWS names it ("PutSnapshotBlock", "CopyImage"); "" matches all.
	Op   string
	Kind FaultKind
	// Rate is the fraction of matching requests affected; 0 or 1 means all. Which requests are
	// affected is deterministic for a given Seed and order of requests.
	Rate float64
	// Count affects at most this many requests; 0 means no limit.
	Count int
	// Latency is the delay of FaultLatency.
	Latency time.Duration
	// Seed seeds the choice of requests when Rate is between 0 and 1.
	Seed uint64
}

type activeFault struct {
	Fault
	rng      *rand.Rand
	affected int
}

type faultSet struct {
	mu     sync.Mutex
	faults []*activeFault
}

// Inject adds a fault. Faults apply in the order they were injected; a latency fault delays the
// request and lets the next fault apply, any other kind ends the search.
func (s *Server) Inject(f Fault) {
	s.faults.mu.Lock()
	defer s.faults.mu.Unlock()
	s.faults.faults = append(s.faults.faults, &activeFault{Fault: f, rng: rand.New(rand.NewPCG(f.Seed, 0x6177_7365_6d75))})
}

// ClearFaults removes every fault and revives a server a FaultCrash took down.
func (s *Server) ClearFaults() {
	s.faults.mu.Lock()
	s.faults.faults = nil
	s.faults.mu.Unlock()
	s.crashed.Store(false)
}

type faultOutcome int

const (
	faultNone       faultOutcome = iota
	faultHandled                 // the fault answered (or dropped) the request
	faultCrashAfter              // serve the request, then crash
)

// pick returns the faults that affect this request, latency first.
func (fs *faultSet) pick(op string) (latency time.Duration, f *Fault) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	for _, af := range fs.faults {
		if af.Op != "" && af.Op != op {
			continue
		}
		if af.Count > 0 && af.affected >= af.Count {
			continue
		}
		if af.Rate > 0 && af.Rate < 1 && af.rng.Float64() >= af.Rate {
			continue
		}
		af.affected++
		if af.Kind == FaultLatency {
			latency += af.Latency
			continue
		}
		cp := af.Fault
		return latency, &cp
	}
	return latency, nil
}

func (fs *faultSet) apply(s *Server, c *call) faultOutcome {
	latency, f := fs.pick(c.op)
	if latency > 0 && !s.sleep(c.r.Context(), latency) {
		resetConn(c.w, c.r, 0)
		return faultHandled
	}
	if f == nil {
		return faultNone
	}
	switch f.Kind {
	case FaultThrottle:
		s.writeError(c, throttleError(c))
	case FaultServerError:
		s.writeError(c, internalError(c.service, fmt.Errorf("injected fault: internal error in %s", c.op)))
	case FaultAccessDenied:
		s.writeError(c, s.accessDenied(c))
	case FaultReset:
		n := c.r.ContentLength / 2
		if n <= 0 || n > 1<<20 {
			n = 4096
		}
		resetConn(c.w, c.r, n)
	case FaultCrash:
		return faultCrashAfter
	default:
		return faultNone
	}
	return faultHandled
}

func throttleError(c *call) *apiError {
	switch c.service {
	case "ec2":
		return &apiError{status: http.StatusServiceUnavailable, code: "RequestLimitExceeded", message: "Request limit exceeded."}
	case "ebs":
		if c.op == "PutSnapshotBlock" || c.op == "GetSnapshotBlock" {
			return &apiError{status: http.StatusBadRequest, code: "RequestThrottledException", reason: "RESOURCE_LEVEL_THROTTLE",
				message: "The number of API requests has exceeded the maximum allowed API request throttling limit for the snapshot."}
		}
		return &apiError{status: http.StatusBadRequest, code: "ThrottlingException", message: "Rate exceeded"}
	case "ssm":
		return &apiError{status: http.StatusBadRequest, code: "ThrottlingException", message: "Rate exceeded"}
	default:
		return &apiError{status: http.StatusServiceUnavailable, code: "SlowDown", message: "Please reduce your request rate."}
	}
}

// accessDenied names the operation and the resource the request was about.
func (s *Server) accessDenied(c *call) *apiError {
	user := "arn:aws:iam::" + s.cfg.accountID + ":user/awsemu"
	res := s.resourceARN(c)
	switch c.service {
	case "ec2":
		return &apiError{status: http.StatusForbidden, code: "UnauthorizedOperation",
			message: fmt.Sprintf("You are not authorized to perform this operation. User: %s is not authorized to perform: ec2:%s on resource: %s because no identity-based policy allows the ec2:%s action", user, c.op, res, c.op)}
	case "ebs":
		return &apiError{status: http.StatusForbidden, code: "AccessDeniedException", reason: "UNAUTHORIZED_ACCOUNT",
			message: fmt.Sprintf("User: %s is not authorized to perform: ebs:%s on resource: %s", user, c.op, res)}
	case "ssm":
		return &apiError{status: http.StatusBadRequest, code: "AccessDeniedException",
			message: fmt.Sprintf("User: %s is not authorized to perform: ssm:%s on resource: %s because no identity-based policy allows the ssm:%s action", user, c.op, res, c.op)}
	default:
		return &apiError{status: http.StatusForbidden, code: "AccessDenied",
			message: fmt.Sprintf("User: %s is not authorized to perform: s3:%s on resource: %s", user, c.op, res)}
	}
}

// resourceARN is the ARN of what a request is about, as far as its parameters say.
func (s *Server) resourceARN(c *call) string {
	acct := s.cfg.accountID
	switch c.service {
	case "ec2":
		if id := c.form.get("ImageId"); id != "" {
			return "arn:aws:ec2:" + c.region + "::image/" + id
		}
		if id := c.form.get("SourceImageId"); id != "" {
			return "arn:aws:ec2:" + c.form.get("SourceRegion") + "::image/" + id
		}
		if id := c.form.get("SnapshotId"); id != "" {
			return "arn:aws:ec2:" + c.region + "::snapshot/" + id
		}
		if c.op == "RegisterImage" {
			return "arn:aws:ec2:" + c.region + "::image/*"
		}
		return "*"
	case "ebs":
		if id := ebsSnapshotIDFromPath(c.r.URL.Path); id != "" {
			return "arn:aws:ec2:" + c.region + "::snapshot/" + id
		}
		return "arn:aws:ec2:" + c.region + "::snapshot/*"
	case "ssm":
		if name := ssmNameFromBody(c.body); name != "" {
			return parameterARN(c.region, acct, name)
		}
		return "arn:aws:ssm:" + c.region + ":" + acct + ":parameter/*"
	default:
		return "arn:aws:s3:::" + trimLeadingSlash(c.r.URL.Path)
	}
}
