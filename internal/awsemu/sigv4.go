package awsemu

import (
	"bufio"
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
)

// sigv4Auth is what a request says about its signature, from the Authorization header or, for a
// presigned URL, from the query.
type sigv4Auth struct {
	accessKey     string
	scopeDate     string // YYYYMMDD
	region        string
	service       string
	signedHeaders []string
	signature     string
	amzDate       time.Time
	presigned     bool
	expires       time.Duration // presigned URLs only
}

type authFailure int

const (
	authMissing authFailure = iota
	authMalformed
	authUnknownKey
	authBadSignature
	authExpired
	authBadPayloadHash
)

const (
	amzDateFormat   = "20060102T150405Z"
	maxClockSkew    = 15 * time.Minute
	unsignedPayload = "UNSIGNED-PAYLOAD"
)

// parseAuth reads the SigV4 fields of a request. It returns nil and an error (in the envelope of
// the service guessed from the request's shape) when there are none or they are malformed.
func parseAuth(r *http.Request) (*sigv4Auth, *apiError) {
	h := r.Header.Get("Authorization")
	q := r.URL.Query()
	switch {
	case h != "":
		return parseAuthHeader(r, h)
	case q.Get("X-Amz-Algorithm") != "":
		return parsePresigned(r, q)
	default:
		return nil, authError(guessService(r), authMissing, "")
	}
}

func parseAuthHeader(r *http.Request, h string) (*sigv4Auth, *apiError) {
	svc := guessService(r)
	const algo = "AWS4-HMAC-SHA256"
	if !strings.HasPrefix(h, algo+" ") {
		return nil, authError(svc, authMalformed, "Unsupported Authorization Type")
	}
	a := &sigv4Auth{}
	var cred string
	for _, part := range strings.Split(strings.TrimPrefix(h, algo+" "), ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return nil, authError(svc, authMalformed, "Authorization header requires each component to be of the form key=value")
		}
		switch k {
		case "Credential":
			cred = v
		case "SignedHeaders":
			a.signedHeaders = strings.Split(v, ";")
		case "Signature":
			a.signature = v
		}
	}
	if cred == "" || len(a.signedHeaders) == 0 || a.signature == "" {
		return nil, authError(svc, authMalformed, "Authorization header requires 'Credential', 'SignedHeaders' and 'Signature' parameters")
	}
	if err := a.parseCredential(svc, cred); err != nil {
		return nil, err
	}
	d := r.Header.Get("X-Amz-Date")
	t, err := time.Parse(amzDateFormat, d)
	if err != nil {
		return nil, authError(a.service, authMalformed, "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header")
	}
	a.amzDate = t
	return a, nil
}

func parsePresigned(r *http.Request, q url.Values) (*sigv4Auth, *apiError) {
	svc := guessService(r)
	if q.Get("X-Amz-Algorithm") != "AWS4-HMAC-SHA256" {
		return nil, authError(svc, authMalformed, "X-Amz-Algorithm only supports \"AWS4-HMAC-SHA256\"")
	}
	a := &sigv4Auth{presigned: true, signature: q.Get("X-Amz-Signature")}
	a.signedHeaders = strings.Split(q.Get("X-Amz-SignedHeaders"), ";")
	if err := a.parseCredential(svc, q.Get("X-Amz-Credential")); err != nil {
		return nil, err
	}
	t, err := time.Parse(amzDateFormat, q.Get("X-Amz-Date"))
	if err != nil {
		return nil, authError(a.service, authMalformed, "X-Amz-Date must be in the ISO8601 Long Format")
	}
	a.amzDate = t
	secs, err := strconv.Atoi(q.Get("X-Amz-Expires"))
	if err != nil || secs < 1 || secs > 604800 {
		return nil, authError(a.service, authMalformed, "X-Amz-Expires must be between 1 and 604800 seconds")
	}
	a.expires = time.Duration(secs) * time.Second
	return a, nil
}

// parseCredential splits AKID/DATE/REGION/SERVICE/aws4_request.
func (a *sigv4Auth) parseCredential(svc, cred string) *apiError {
	parts := strings.Split(cred, "/")
	if len(parts) != 5 || parts[4] != "aws4_request" {
		return authError(svc, authMalformed, fmt.Sprintf("Credential should be scoped to a valid region, not %q", cred))
	}
	a.accessKey, a.scopeDate, a.region, a.service = parts[0], parts[1], parts[2], parts[3]
	return nil
}

// authError is the documented rejection of each service for each way authentication fails.
func authError(service string, kind authFailure, detail string) *apiError {
	const badSig = "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details."
	switch service {
	case "ec2":
		switch kind {
		case authExpired:
			return &apiError{status: http.StatusBadRequest, code: "RequestExpired", message: "Request has expired. " + detail}
		case authMissing:
			return &apiError{status: http.StatusUnauthorized, code: "AuthFailure", message: "AWS was not able to validate the provided access credentials (the request is not signed)"}
		case authMalformed:
			return &apiError{status: http.StatusBadRequest, code: "IncompleteSignature", message: detail}
		}
		return &apiError{status: http.StatusUnauthorized, code: "AuthFailure", message: "AWS was not able to validate the provided access credentials"}
	case "ebs", "ssm":
		// EBS direct documents 403 for these; the JSON protocol services such as SSM answer 400.
		status := http.StatusForbidden
		if service == "ssm" {
			status = http.StatusBadRequest
		}
		switch kind {
		case authMissing:
			return &apiError{status: status, code: "MissingAuthenticationTokenException", message: "Missing Authentication Token"}
		case authMalformed:
			return &apiError{status: status, code: "IncompleteSignatureException", message: detail}
		case authUnknownKey:
			return &apiError{status: status, code: "UnrecognizedClientException", message: "The security token included in the request is invalid."}
		case authExpired:
			return &apiError{status: status, code: "InvalidSignatureException", message: "Signature expired: " + detail}
		}
		return &apiError{status: status, code: "InvalidSignatureException", message: badSig}
	default:
		switch kind {
		case authMissing:
			return &apiError{status: http.StatusForbidden, code: "AccessDenied", message: "Access Denied"}
		case authMalformed:
			return &apiError{status: http.StatusBadRequest, code: "AuthorizationHeaderMalformed", message: detail}
		case authUnknownKey:
			return &apiError{status: http.StatusForbidden, code: "InvalidAccessKeyId", message: "The AWS Access Key Id you provided does not exist in our records."}
		case authExpired:
			return &apiError{status: http.StatusForbidden, code: "RequestTimeTooSkewed", message: "The difference between the request time and the current time is too large. " + detail}
		case authBadPayloadHash:
			return &apiError{status: http.StatusBadRequest, code: "XAmzContentSHA256Mismatch", message: "The provided 'x-amz-content-sha256' header does not match what was computed."}
		}
		return &apiError{status: http.StatusForbidden, code: "SignatureDoesNotMatch", message: badSig}
	}
}

// verifySignature recomputes the request's signature with the secret of its access key. For the
// streamed operations it also sets c.payload, the body decoded from aws-chunked and checked
// against x-amz-content-sha256 as it is read.
func (s *Server) verifySignature(c *call) *apiError {
	a := c.auth
	secret, ok := s.cfg.keys[a.accessKey]
	if !ok {
		return authError(c.service, authUnknownKey, "")
	}
	if a.scopeDate != a.amzDate.Format("20060102") {
		return authError(c.service, authMalformed, fmt.Sprintf("Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: %q != %q", a.scopeDate, a.amzDate.Format("20060102")))
	}
	now := s.now()
	if a.presigned {
		if now.After(a.amzDate.Add(a.expires)) {
			return &apiError{status: http.StatusForbidden, code: "AccessDenied", message: "Request has expired"}
		}
	} else if d := now.Sub(a.amzDate); d > maxClockSkew || d < -maxClockSkew {
		return authError(c.service, authExpired, fmt.Sprintf("%s is now earlier than %s (%s - 15 min.)", a.amzDate.Format(amzDateFormat), now.Format(amzDateFormat), now.Format(amzDateFormat)))
	}

	payloadHash := c.r.Header.Get("X-Amz-Content-Sha256")
	switch {
	case a.presigned && payloadHash == "":
		payloadHash = unsignedPayload
	case payloadHash == "" && c.service == "s3":
		return s3Err(http.StatusBadRequest, "InvalidRequest", "Missing required header for this request: x-amz-content-sha256")
	case payloadHash == "":
		if err := c.readBody(); err != nil {
			return err
		}
		sum := sha256.Sum256(c.body)
		payloadHash = hex.EncodeToString(sum[:])
	}
	streaming := strings.HasPrefix(payloadHash, "STREAMING-")
	if payloadHash != unsignedPayload && !streaming {
		if b, err := hex.DecodeString(payloadHash); err != nil || len(b) != sha256.Size {
			return authError(c.service, authBadPayloadHash, "")
		}
		if c.hasBody {
			sum := sha256.Sum256(c.body)
			if hex.EncodeToString(sum[:]) != payloadHash {
				return authError(c.service, authBadPayloadHash, "")
			}
		}
	}

	canonical := canonicalRequest(c, a, payloadHash)
	scope := a.scopeDate + "/" + a.region + "/" + a.service + "/aws4_request"
	crHash := sha256.Sum256([]byte(canonical))
	toSign := "AWS4-HMAC-SHA256\n" + a.amzDate.Format(amzDateFormat) + "\n" + scope + "\n" + hex.EncodeToString(crHash[:])
	key := hmacSHA256([]byte("AWS4"+secret), a.scopeDate)
	key = hmacSHA256(key, a.region)
	key = hmacSHA256(key, a.service)
	key = hmacSHA256(key, "aws4_request")
	want := hex.EncodeToString(hmacSHA256(key, toSign))
	if !hmac.Equal([]byte(want), []byte(a.signature)) {
		return authError(c.service, authBadSignature, "")
	}

	// The body of a streamed operation.
	switch {
	case c.hasBody:
		c.payload = bytes.NewReader(c.body)
	case streaming:
		c.payload = newChunkedReader(c.r.Body)
	case payloadHash == unsignedPayload:
		c.payload = c.r.Body
	default:
		want, _ := hex.DecodeString(payloadHash)
		c.payload = &hashCheckReader{r: c.r.Body, h: sha256.New(), want: want}
	}
	return nil
}

func hmacSHA256(key []byte, data string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(data))
	return m.Sum(nil)
}

// canonicalRequest builds the SigV4 canonical request from the request as it arrived.
func canonicalRequest(c *call, a *sigv4Auth, payloadHash string) string {
	r := c.r
	rawPath, rawQuery, _ := strings.Cut(r.RequestURI, "?")
	if rawPath == "" || rawPath == "*" {
		rawPath = "/"
	}
	if u, err := url.Parse(rawPath); err == nil && u.IsAbs() {
		rawPath = u.EscapedPath()
	}
	uri := rawPath
	if c.service != "s3" {
		// Every service but S3 signs the path URI-encoded twice.
		uri = escapePath(rawPath)
	}

	q, _ := url.ParseQuery(rawQuery)
	if a.presigned {
		delete(q, "X-Amz-Signature")
	}
	type kv struct{ k, v string }
	var params []kv
	for k, vs := range q {
		for _, v := range vs {
			params = append(params, kv{queryEscape(k), queryEscape(v)})
		}
	}
	sort.Slice(params, func(i, j int) bool {
		if params[i].k != params[j].k {
			return params[i].k < params[j].k
		}
		return params[i].v < params[j].v
	})
	var cq strings.Builder
	for i, p := range params {
		if i > 0 {
			cq.WriteByte('&')
		}
		cq.WriteString(p.k + "=" + p.v)
	}

	var ch strings.Builder
	for _, name := range a.signedHeaders {
		var vals []string
		switch name {
		case "host":
			vals = []string{r.Host}
		case "content-length":
			if v := r.Header.Get("Content-Length"); v != "" {
				vals = []string{v}
			} else {
				vals = []string{strconv.FormatInt(r.ContentLength, 10)}
			}
		case "transfer-encoding":
			vals = []string{strings.Join(r.TransferEncoding, ",")}
		default:
			vals = r.Header.Values(name)
		}
		for i, v := range vals {
			vals[i] = strings.TrimSpace(stripExcessSpaces(v))
		}
		ch.WriteString(name + ":" + strings.Join(vals, ",") + "\n")
	}

	return strings.Join([]string{r.Method, uri, cq.String(), ch.String(), strings.Join(a.signedHeaders, ";"), payloadHash}, "\n")
}

// escapePath percent-encodes every byte but the unreserved characters and '/'.
func escapePath(p string) string {
	var b strings.Builder
	for i := 0; i < len(p); i++ {
		ch := p[i]
		if ch == '/' || unreserved(ch) {
			b.WriteByte(ch)
		} else {
			fmt.Fprintf(&b, "%%%02X", ch)
		}
	}
	return b.String()
}

func queryEscape(s string) string { return strings.ReplaceAll(url.QueryEscape(s), "+", "%20") }

func unreserved(c byte) bool {
	return 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~'
}

func stripExcessSpaces(s string) string {
	for strings.Contains(s, "  ") {
		s = strings.ReplaceAll(s, "  ", " ")
	}
	return s
}

// hashCheckReader fails at the end of the body when its SHA-256 is not want.
type hashCheckReader struct {
	r    io.Reader
	h    hash.Hash
	want []byte
}

var errPayloadHash = errors.New("the body does not match x-amz-content-sha256")

func (h *hashCheckReader) Read(p []byte) (int, error) {
	n, err := h.r.Read(p)
	h.h.Write(p[:n])
	if err == io.EOF && !bytes.Equal(h.h.Sum(nil), h.want) {
		return n, errPayloadHash
	}
	return n, err
}

// chunkedReader decodes an aws-chunked body (STREAMING-* payloads): chunks of
// "hex-size[;chunk-signature=...]\r\n" + data + "\r\n", a zero-size chunk, then trailers.
// Chunk signatures are not checked.
type chunkedReader struct {
	br       *bufio.Reader
	left     int64
	done     bool
	trailers http.Header
}

func newChunkedReader(r io.Reader) *chunkedReader {
	return &chunkedReader{br: bufio.NewReaderSize(r, 64<<10), trailers: http.Header{}}
}

var errChunked = errors.New("malformed aws-chunked body")

func (c *chunkedReader) Read(p []byte) (int, error) {
	if c.done {
		return 0, io.EOF
	}
	if c.left == 0 {
		line, err := c.br.ReadString('\n')
		if err != nil {
			return 0, errChunked
		}
		sizeHex, _, _ := strings.Cut(strings.TrimRight(line, "\r\n"), ";")
		size, err := strconv.ParseInt(strings.TrimSpace(sizeHex), 16, 64)
		if err != nil || size < 0 {
			return 0, errChunked
		}
		if size == 0 {
			for {
				t, err := c.br.ReadString('\n')
				t = strings.TrimRight(t, "\r\n")
				if t == "" {
					break
				}
				if k, v, ok := strings.Cut(t, ":"); ok {
					c.trailers.Add(strings.TrimSpace(k), strings.TrimSpace(v))
				}
				if err != nil {
					break
				}
			}
			c.done = true
			return 0, io.EOF
		}
		c.left = size
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.br.Read(p)
	c.left -= int64(n)
	if c.left == 0 {
		if crlf, err := c.br.ReadString('\n'); err != nil || strings.TrimRight(crlf, "\r\n") != "" {
			return n, errChunked
		}
	}
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}
