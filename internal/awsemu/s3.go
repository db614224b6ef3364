package awsemu

import (
	"bytes"
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// S3 (REST XML, path-style): buckets, PutObject, GetObject, HeadObject, DeleteObject,
// ListObjectsV2, and multipart uploads.

const (
	s3Xmlns         = "http://s3.amazonaws.com/doc/2006-03-01/"
	maxPutObject    = 5 << 30
	minPartSize     = 5 << 20
	maxPartNumber   = 10000
	s3StateFileName = "state.json"
)

type s3State struct {
	dir     string
	Buckets map[string]*bucket   `json:"buckets"`
	Uploads map[string]*mpUpload `json:"uploads"`
}

type bucket struct {
	Name    string             `json:"name"`
	Region  string             `json:"region"`
	Created time.Time          `json:"created"`
	Objects map[string]*object `json:"objects"`
}

type object struct {
	Key          string            `json:"key"`
	Size         int64             `json:"size"`
	ETag         string            `json:"etag"` // quoted
	ContentType  string            `json:"contentType,omitempty"`
	LastModified time.Time         `json:"lastModified"`
	Meta         map[string]string `json:"meta,omitempty"`
	Checksums    map[string]string `json:"checksums,omitempty"` // x-amz-checksum-* header -> value
}

type mpUpload struct {
	Bucket      string            `json:"bucket"`
	Key         string            `json:"key"`
	Initiated   time.Time         `json:"initiated"`
	ContentType string            `json:"contentType,omitempty"`
	Meta        map[string]string `json:"meta,omitempty"`
	Parts       map[int]*mpPart   `json:"parts"`
}

type mpPart struct {
	Size int64  `json:"size"`
	ETag string `json:"etag"`
}

func loadS3(dir string) (*s3State, error) {
	st := &s3State{dir: filepath.Join(dir, "s3"), Buckets: map[string]*bucket{}, Uploads: map[string]*mpUpload{}}
	b, err := os.ReadFile(filepath.Join(st.dir, s3StateFileName))
	if errors.Is(err, fs.ErrNotExist) {
		return st, nil
	} else if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, st); err != nil {
		return nil, fmt.Errorf("s3: %w", err)
	}
	if st.Buckets == nil {
		st.Buckets = map[string]*bucket{}
	}
	if st.Uploads == nil {
		st.Uploads = map[string]*mpUpload{}
	}
	for _, bk := range st.Buckets {
		if bk.Objects == nil {
			bk.Objects = map[string]*object{}
		}
	}
	return st, nil
}

func (st *s3State) save() error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(st.dir, s3StateFileName), b)
}

func (st *s3State) objectPath(bucketName, key string) string {
	sum := sha256.Sum256([]byte(key))
	return filepath.Join(st.dir, "data", bucketName, hex.EncodeToString(sum[:]))
}

func (st *s3State) partPath(uploadID string, n int) string {
	return filepath.Join(st.dir, "uploads", uploadID, strconv.Itoa(n))
}

func trimLeadingSlash(p string) string { return strings.TrimPrefix(p, "/") }

// s3Target is the bucket and key of a path-style request.
func s3Target(c *call) (bucketName, key string) {
	p := trimLeadingSlash(c.r.URL.Path)
	bucketName, key, _ = strings.Cut(p, "/")
	return bucketName, key
}

func (s *Server) routeS3(c *call) *apiError {
	bk, key := s3Target(c)
	q := c.r.URL.Query()
	has := func(k string) bool { _, ok := q[k]; return ok }
	m := c.r.Method
	switch {
	case bk == "":
		if m == http.MethodGet {
			c.op = "ListBuckets"
		}
	case key == "":
		switch m {
		case http.MethodPut:
			c.op = "CreateBucket"
		case http.MethodHead:
			c.op = "HeadBucket"
		case http.MethodDelete:
			c.op = "DeleteBucket"
		case http.MethodGet:
			switch {
			case has("location"):
				c.op = "GetBucketLocation"
			case q.Get("list-type") == "2":
				c.op = "ListObjectsV2"
			case has("uploads"):
				c.op = "ListMultipartUploads"
			default:
				c.op = "ListObjects"
			}
		}
	default:
		switch m {
		case http.MethodPut:
			switch {
			case has("uploadId"):
				c.op = "UploadPart"
				if c.r.Header.Get("X-Amz-Copy-Source") != "" {
					c.op = "UploadPartCopy"
				}
				return nil
			case c.r.Header.Get("X-Amz-Copy-Source") != "":
				c.op = "CopyObject"
			default:
				c.op = "PutObject"
				return nil
			}
		case http.MethodGet:
			c.op = "GetObject"
			if has("uploadId") {
				c.op = "ListParts"
			}
		case http.MethodHead:
			c.op = "HeadObject"
		case http.MethodDelete:
			c.op = "DeleteObject"
			if has("uploadId") {
				c.op = "AbortMultipartUpload"
			}
		case http.MethodPost:
			switch {
			case has("uploads"):
				c.op = "CreateMultipartUpload"
			case has("uploadId"):
				c.op = "CompleteMultipartUpload"
			}
		}
	}
	if c.op == "" {
		return s3Err(http.StatusMethodNotAllowed, "MethodNotAllowed", fmt.Sprintf("The specified method is not allowed against this resource: %s %s", m, c.r.URL.Path))
	}
	return c.readBody()
}

func (s *Server) serveS3(c *call) *apiError {
	switch c.op {
	case "ListBuckets":
		return s.listBuckets(c)
	case "CreateBucket":
		return s.createBucket(c)
	case "HeadBucket":
		return s.headBucket(c)
	case "DeleteBucket":
		return s.deleteBucket(c)
	case "GetBucketLocation":
		return s.getBucketLocation(c)
	case "ListObjectsV2", "ListObjects":
		return s.listObjects(c)
	case "PutObject":
		return s.putObject(c)
	case "GetObject", "HeadObject":
		return s.getObject(c)
	case "DeleteObject":
		return s.deleteObject(c)
	case "CreateMultipartUpload":
		return s.createMultipartUpload(c)
	case "UploadPart":
		return s.uploadPart(c)
	case "CompleteMultipartUpload":
		return s.completeMultipartUpload(c)
	case "AbortMultipartUpload":
		return s.abortMultipartUpload(c)
	}
	return s3Err(http.StatusNotImplemented, "NotImplemented", fmt.Sprintf("awsemu does not implement %s", c.op))
}

func writeS3XML(c *call, status int, v any) *apiError {
	b, err := xml.Marshal(v)
	if err != nil {
		return internalError("s3", err)
	}
	h := c.w.Header()
	h.Set("Content-Type", "application/xml")
	h.Set("X-Amz-Request-Id", c.requestID)
	c.w.WriteHeader(status)
	_, _ = c.w.Write(append([]byte(xml.Header), b...))
	return nil
}

func writeS3Empty(c *call, status int) *apiError {
	c.w.Header().Set("X-Amz-Request-Id", c.requestID)
	c.w.WriteHeader(status)
	return nil
}

// bucketFor finds a bucket and checks the request was signed for its region. s.mu must be held.
func (s *Server) bucketFor(c *call, name string) (*bucket, *apiError) {
	bk := s.st.s3.Buckets[name]
	if bk == nil {
		e := s3Err(http.StatusNotFound, "NoSuchBucket", "The specified bucket does not exist")
		e.bucket = name
		return nil, e
	}
	if bk.Region != c.region {
		e := s3Err(http.StatusBadRequest, "AuthorizationHeaderMalformed",
			fmt.Sprintf("The authorization header is malformed; the region '%s' is wrong; expecting '%s'", c.region, bk.Region))
		e.region = bk.Region
		return nil, e
	}
	return bk, nil
}

var bucketNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$`)

func (s *Server) createBucket(c *call) *apiError {
	name, _ := s3Target(c)
	if !bucketNameRE.MatchString(name) || strings.Contains(name, "..") {
		e := s3Err(http.StatusBadRequest, "InvalidBucketName", "The specified bucket is not valid.")
		e.bucket = name
		return e
	}
	var cfg struct {
		LocationConstraint string `xml:"LocationConstraint"`
	}
	if len(bytes.TrimSpace(c.body)) > 0 {
		if err := xml.Unmarshal(c.body, &cfg); err != nil {
			return s3Err(http.StatusBadRequest, "MalformedXML", "The XML you provided was not well-formed or did not validate against our published schema")
		}
	}
	want := cfg.LocationConstraint
	if want == "" {
		want = "us-east-1"
	}
	if want != c.region || (c.region == "us-east-1" && cfg.LocationConstraint != "") {
		return s3Err(http.StatusBadRequest, "IllegalLocationConstraintException",
			fmt.Sprintf("The %s location constraint is incompatible for the region specific endpoint this request was sent to.", cfg.LocationConstraint))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if bk, ok := s.st.s3.Buckets[name]; ok {
		if bk.Region == "us-east-1" && c.region == "us-east-1" {
			c.w.Header().Set("Location", "/"+name)
			return writeS3Empty(c, http.StatusOK)
		}
		e := s3Err(http.StatusConflict, "BucketAlreadyOwnedByYou", "Your previous request to create the named bucket succeeded and you already own it.")
		e.bucket = name
		return e
	}
	s.st.s3.Buckets[name] = &bucket{Name: name, Region: c.region, Created: s.now(), Objects: map[string]*object{}}
	if err := s.st.s3.save(); err != nil {
		return internalError("s3", err)
	}
	c.w.Header().Set("Location", "/"+name)
	return writeS3Empty(c, http.StatusOK)
}

func (s *Server) headBucket(c *call) *apiError {
	name, _ := s3Target(c)
	s.mu.Lock()
	defer s.mu.Unlock()
	bk := s.st.s3.Buckets[name]
	if bk == nil {
		return s3Err(http.StatusNotFound, "NotFound", "Not Found")
	}
	c.w.Header().Set("X-Amz-Bucket-Region", bk.Region)
	if bk.Region != c.region {
		return s3Err(http.StatusMovedPermanently, "PermanentRedirect", "wrong region")
	}
	return writeS3Empty(c, http.StatusOK)
}

func (s *Server) deleteBucket(c *call) *apiError {
	name, _ := s3Target(c)
	s.mu.Lock()
	defer s.mu.Unlock()
	bk, aerr := s.bucketFor(c, name)
	if aerr != nil {
		return aerr
	}
	if len(bk.Objects) > 0 {
		e := s3Err(http.StatusConflict, "BucketNotEmpty", "The bucket you tried to delete is not empty")
		e.bucket = name
		return e
	}
	delete(s.st.s3.Buckets, name)
	if err := s.st.s3.save(); err != nil {
		return internalError("s3", err)
	}
	return writeS3Empty(c, http.StatusNoContent)
}

func (s *Server) getBucketLocation(c *call) *apiError {
	name, _ := s3Target(c)
	s.mu.Lock()
	bk := s.st.s3.Buckets[name]
	s.mu.Unlock()
	if bk == nil {
		e := s3Err(http.StatusNotFound, "NoSuchBucket", "The specified bucket does not exist")
		e.bucket = name
		return e
	}
	loc := bk.Region
	if loc == "us-east-1" {
		loc = ""
	}
	type resp struct {
		XMLName xml.Name `xml:"LocationConstraint"`
		Xmlns   string   `xml:"xmlns,attr"`
		Value   string   `xml:",chardata"`
	}
	return writeS3XML(c, http.StatusOK, resp{Xmlns: s3Xmlns, Value: loc})
}

func (s *Server) listBuckets(c *call) *apiError {
	type xb struct {
		Name         string `xml:"Name"`
		CreationDate string `xml:"CreationDate"`
		BucketRegion string `xml:"BucketRegion"`
	}
	type resp struct {
		XMLName xml.Name `xml:"ListAllMyBucketsResult"`
		Xmlns   string   `xml:"xmlns,attr"`
		OwnerID string   `xml:"Owner>ID"`
		Buckets []xb     `xml:"Buckets>Bucket"`
	}
	s.mu.Lock()
	out := resp{Xmlns: s3Xmlns, OwnerID: s.cfg.accountID}
	for _, n := range sortedKeys(s.st.s3.Buckets) {
		bk := s.st.s3.Buckets[n]
		out.Buckets = append(out.Buckets, xb{n, ec2Time(bk.Created), bk.Region})
	}
	s.mu.Unlock()
	return writeS3XML(c, http.StatusOK, out)
}

func (s *Server) listObjects(c *call) *apiError {
	name, _ := s3Target(c)
	q := c.r.URL.Query()
	prefix, delim := q.Get("prefix"), q.Get("delimiter")
	maxKeys := 1000
	if v := q.Get("max-keys"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return s3Err(http.StatusBadRequest, "InvalidArgument", "Provided max-keys not an integer or within integer range")
		}
		maxKeys = min(n, 1000)
	}
	after := q.Get("start-after")
	if v := q.Get("marker"); v != "" {
		after = v
	}
	if v := q.Get("continuation-token"); v != "" {
		b, err := base64.RawURLEncoding.DecodeString(v)
		if err != nil {
			return s3Err(http.StatusBadRequest, "InvalidArgument", "The continuation token provided is incorrect")
		}
		after = string(b)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	bk, aerr := s.bucketFor(c, name)
	if aerr != nil {
		return aerr
	}
	type content struct {
		Key          string `xml:"Key"`
		LastModified string `xml:"LastModified"`
		ETag         string `xml:"ETag"`
		Size         int64  `xml:"Size"`
		StorageClass string `xml:"StorageClass"`
	}
	type cp struct {
		Prefix string `xml:"Prefix"`
	}
	type resp struct {
		XMLName               xml.Name  `xml:"ListBucketResult"`
		Xmlns                 string    `xml:"xmlns,attr"`
		Name                  string    `xml:"Name"`
		Prefix                string    `xml:"Prefix"`
		Delimiter             string    `xml:"Delimiter,omitempty"`
		MaxKeys               int       `xml:"MaxKeys"`
		KeyCount              int       `xml:"KeyCount"`
		IsTruncated           bool      `xml:"IsTruncated"`
		Contents              []content `xml:"Contents"`
		CommonPrefixes        []cp      `xml:"CommonPrefixes"`
		ContinuationToken     string    `xml:"ContinuationToken,omitempty"`
		NextContinuationToken string    `xml:"NextContinuationToken,omitempty"`
		NextMarker            string    `xml:"NextMarker,omitempty"`
	}
	out := resp{Xmlns: s3Xmlns, Name: name, Prefix: prefix, Delimiter: delim, MaxKeys: maxKeys, ContinuationToken: q.Get("continuation-token")}
	seen := map[string]bool{}
	last := ""
	for _, k := range sortedKeys(bk.Objects) {
		if !strings.HasPrefix(k, prefix) || k <= after {
			continue
		}
		if out.KeyCount == maxKeys {
			out.IsTruncated = true
			break
		}
		if delim != "" {
			if i := strings.Index(k[len(prefix):], delim); i >= 0 {
				p := k[:len(prefix)+i+len(delim)]
				if !seen[p] {
					seen[p] = true
					out.CommonPrefixes = append(out.CommonPrefixes, cp{p})
					out.KeyCount++
				}
				last = k
				continue
			}
		}
		o := bk.Objects[k]
		out.Contents = append(out.Contents, content{k, ec2Time(o.LastModified), o.ETag, o.Size, "STANDARD"})
		out.KeyCount++
		last = k
	}
	if out.IsTruncated {
		if c.op == "ListObjectsV2" {
			out.NextContinuationToken = base64.RawURLEncoding.EncodeToString([]byte(last))
		} else {
			out.NextMarker = last
		}
	}
	return writeS3XML(c, http.StatusOK, out)
}

// checksummer computes the digests a PutObject or UploadPart body is checked against.
type checksummer struct {
	md5  hash.Hash
	alg  map[string]hash.Hash // x-amz-checksum-* name -> hash
	size int64
}

func newChecksummer(h http.Header) *checksummer {
	cs := &checksummer{md5: md5.New(), alg: map[string]hash.Hash{}}
	add := func(name string) {
		switch name {
		case "x-amz-checksum-crc32":
			cs.alg[name] = crc32.NewIEEE()
		case "x-amz-checksum-crc32c":
			cs.alg[name] = crc32.New(crc32.MakeTable(crc32.Castagnoli))
		case "x-amz-checksum-sha1":
			cs.alg[name] = sha1.New()
		case "x-amz-checksum-sha256":
			cs.alg[name] = sha256.New()
		}
	}
	for k := range h {
		add(strings.ToLower(k))
	}
	if a := h.Get("X-Amz-Sdk-Checksum-Algorithm"); a != "" {
		add("x-amz-checksum-" + strings.ToLower(a))
	}
	for _, t := range strings.Split(h.Get("X-Amz-Trailer"), ",") {
		add(strings.ToLower(strings.TrimSpace(t)))
	}
	return cs
}

func (cs *checksummer) Write(p []byte) (int, error) {
	cs.md5.Write(p)
	for _, h := range cs.alg {
		h.Write(p)
	}
	cs.size += int64(len(p))
	return len(p), nil
}

// verify compares the digests with the headers and trailers that carry them.
func (cs *checksummer) verify(h http.Header, trailers http.Header) (map[string]string, *apiError) {
	if want := h.Get("Content-Md5"); want != "" {
		if base64.StdEncoding.EncodeToString(cs.md5.Sum(nil)) != want {
			return nil, s3Err(http.StatusBadRequest, "BadDigest", "The Content-MD5 you specified did not match what we received.")
		}
	}
	got := map[string]string{}
	for name, hs := range cs.alg {
		sum := hs.Sum(nil)
		v := base64.StdEncoding.EncodeToString(sum)
		want := h.Get(name)
		if want == "" && trailers != nil {
			want = trailers.Get(name)
		}
		if want == "" {
			continue
		}
		if want != v {
			alg := strings.ToUpper(strings.TrimPrefix(name, "x-amz-checksum-"))
			return nil, s3Err(http.StatusBadRequest, "BadDigest", fmt.Sprintf("The %s you specified did not match the calculated checksum.", alg))
		}
		got[name] = v
	}
	return got, nil
}

func (cs *checksummer) etag() string { return `"` + hex.EncodeToString(cs.md5.Sum(nil)) + `"` }

// receiveBody streams the payload to a temporary file beside final, checking its length and
// checksums, and renames it to final.
func (s *Server) receiveBody(c *call, final string) (*checksummer, map[string]string, *apiError) {
	if err := os.MkdirAll(filepath.Dir(final), 0o755); err != nil {
		return nil, nil, internalError("s3", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(final), ".part-*")
	if err != nil {
		return nil, nil, internalError("s3", err)
	}
	defer os.Remove(tmp.Name())
	cs := newChecksummer(c.r.Header)
	_, err = io.Copy(io.MultiWriter(tmp, cs), io.LimitReader(c.payload, maxPutObject+1))
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	switch {
	case errors.Is(err, errPayloadHash):
		return nil, nil, authError("s3", authBadPayloadHash, "")
	case err != nil:
		return nil, nil, s3Err(http.StatusBadRequest, "IncompleteBody", "You did not provide the number of bytes specified by the Content-Length HTTP header: "+err.Error())
	case cs.size > maxPutObject:
		return nil, nil, s3Err(http.StatusBadRequest, "EntityTooLarge", "Your proposed upload exceeds the maximum allowed object size.")
	}
	if d := c.r.Header.Get("X-Amz-Decoded-Content-Length"); d != "" {
		if n, err := strconv.ParseInt(d, 10, 64); err != nil || n != cs.size {
			return nil, nil, s3Err(http.StatusBadRequest, "IncompleteBody", "The decoded body does not have x-amz-decoded-content-length bytes")
		}
	}
	var trailers http.Header
	if cr, ok := c.payload.(*chunkedReader); ok {
		trailers = cr.trailers
	}
	sums, aerr := cs.verify(c.r.Header, trailers)
	if aerr != nil {
		return nil, nil, aerr
	}
	if err := os.Rename(tmp.Name(), final); err != nil {
		return nil, nil, internalError("s3", err)
	}
	return cs, sums, nil
}

func userMeta(h http.Header) map[string]string {
	m := map[string]string{}
	for k, v := range h {
		if name, ok := strings.CutPrefix(strings.ToLower(k), "x-amz-meta-"); ok && len(v) > 0 {
			m[name] = v[0]
		}
	}
	if len(m) == 0 {
		return nil
	}
	return m
}

func (s *Server) putObject(c *call) *apiError {
	name, key := s3Target(c)
	s.mu.Lock()
	_, aerr := s.bucketFor(c, name)
	s.mu.Unlock()
	if aerr != nil {
		return aerr
	}
	if len(key) > 1024 {
		return s3Err(http.StatusBadRequest, "KeyTooLongError", "Your key is too long")
	}
	// Receive beside the object under a name of its own, so that concurrent writers of one key
	// do not interleave; the last rename wins, as on S3.
	final := s.st.s3.objectPath(name, key) + "." + c.requestID
	cs, sums, aerr := s.receiveBody(c, final)
	if aerr != nil {
		return aerr
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	bk, aerr := s.bucketFor(c, name)
	if aerr != nil {
		os.Remove(final)
		return aerr
	}
	if err := os.Rename(final, s.st.s3.objectPath(name, key)); err != nil {
		return internalError("s3", err)
	}
	o := &object{Key: key, Size: cs.size, ETag: cs.etag(), ContentType: c.r.Header.Get("Content-Type"),
		LastModified: s.now(), Meta: userMeta(c.r.Header), Checksums: sums}
	bk.Objects[key] = o
	if err := s.st.s3.save(); err != nil {
		return internalError("s3", err)
	}
	h := c.w.Header()
	h.Set("ETag", o.ETag)
	for k, v := range sums {
		h.Set(k, v)
	}
	return writeS3Empty(c, http.StatusOK)
}

func (s *Server) getObject(c *call) *apiError {
	name, key := s3Target(c)
	s.mu.Lock()
	bk, aerr := s.bucketFor(c, name)
	var o *object
	if bk != nil {
		o = bk.Objects[key]
	}
	s.mu.Unlock()
	if aerr != nil {
		return aerr
	}
	if o == nil {
		e := s3Err(http.StatusNotFound, "NoSuchKey", "The specified key does not exist.")
		e.key = key
		return e
	}
	f, err := os.Open(s.st.s3.objectPath(name, key))
	if err != nil {
		return internalError("s3", err)
	}
	defer f.Close()
	h := c.w.Header()
	h.Set("ETag", o.ETag)
	h.Set("Accept-Ranges", "bytes")
	h.Set("X-Amz-Request-Id", c.requestID)
	ct := o.ContentType
	if ct == "" {
		ct = "binary/octet-stream"
	}
	h.Set("Content-Type", ct)
	for k, v := range o.Meta {
		h.Set("X-Amz-Meta-"+k, v)
	}
	if c.r.Header.Get("X-Amz-Checksum-Mode") == "ENABLED" {
		for k, v := range o.Checksums {
			h.Set(k, v)
		}
	}
	http.ServeContent(c.w, c.r, "", o.LastModified, f)
	return nil
}

func (s *Server) deleteObject(c *call) *apiError {
	name, key := s3Target(c)
	s.mu.Lock()
	defer s.mu.Unlock()
	bk, aerr := s.bucketFor(c, name)
	if aerr != nil {
		return aerr
	}
	if _, ok := bk.Objects[key]; ok {
		delete(bk.Objects, key)
		os.Remove(s.st.s3.objectPath(name, key))
		if err := s.st.s3.save(); err != nil {
			return internalError("s3", err)
		}
	}
	return writeS3Empty(c, http.StatusNoContent)
}

func (s *Server) createMultipartUpload(c *call) *apiError {
	name, key := s3Target(c)
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, aerr := s.bucketFor(c, name); aerr != nil {
		return aerr
	}
	id := base64.RawURLEncoding.EncodeToString([]byte(newRequestID()))
	s.st.s3.Uploads[id] = &mpUpload{Bucket: name, Key: key, Initiated: s.now(), ContentType: c.r.Header.Get("Content-Type"),
		Meta: userMeta(c.r.Header), Parts: map[int]*mpPart{}}
	if err := s.st.s3.save(); err != nil {
		return internalError("s3", err)
	}
	type resp struct {
		XMLName  xml.Name `xml:"InitiateMultipartUploadResult"`
		Xmlns    string   `xml:"xmlns,attr"`
		Bucket   string   `xml:"Bucket"`
		Key      string   `xml:"Key"`
		UploadID string   `xml:"UploadId"`
	}
	return writeS3XML(c, http.StatusOK, resp{Xmlns: s3Xmlns, Bucket: name, Key: key, UploadID: id})
}

// upload finds a multipart upload of the request's bucket and key. s.mu must be held.
func (s *Server) upload(c *call) (*mpUpload, string, *apiError) {
	name, key := s3Target(c)
	if _, aerr := s.bucketFor(c, name); aerr != nil {
		return nil, "", aerr
	}
	id := c.r.URL.Query().Get("uploadId")
	u := s.st.s3.Uploads[id]
	if u == nil || u.Bucket != name || u.Key != key {
		return nil, "", s3Err(http.StatusNotFound, "NoSuchUpload", "The specified upload does not exist. The upload ID may be invalid, or the upload may have been aborted or completed.")
	}
	return u, id, nil
}

func (s *Server) uploadPart(c *call) *apiError {
	n, err := strconv.Atoi(c.r.URL.Query().Get("partNumber"))
	if err != nil || n < 1 || n > maxPartNumber {
		return s3Err(http.StatusBadRequest, "InvalidArgument", "Part number must be an integer between 1 and 10000, inclusive")
	}
	s.mu.Lock()
	_, id, aerr := s.upload(c)
	s.mu.Unlock()
	if aerr != nil {
		return aerr
	}
	final := s.st.s3.partPath(id, n) + "." + c.requestID
	cs, sums, aerr := s.receiveBody(c, final)
	if aerr != nil {
		return aerr
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	u, _, aerr := s.upload(c)
	if aerr != nil {
		os.Remove(final)
		return aerr
	}
	if err := os.Rename(final, s.st.s3.partPath(id, n)); err != nil {
		return internalError("s3", err)
	}
	u.Parts[n] = &mpPart{Size: cs.size, ETag: cs.etag()}
	if err := s.st.s3.save(); err != nil {
		return internalError("s3", err)
	}
	h := c.w.Header()
	h.Set("ETag", cs.etag())
	for k, v := range sums {
		h.Set(k, v)
	}
	return writeS3Empty(c, http.StatusOK)
}

func (s *Server) completeMultipartUpload(c *call) *apiError {
	var in struct {
		Parts []struct {
			PartNumber int    `xml:"PartNumber"`
			ETag       string `xml:"ETag"`
		} `xml:"Part"`
	}
	if err := xml.Unmarshal(c.body, &in); err != nil || len(in.Parts) == 0 {
		return s3Err(http.StatusBadRequest, "MalformedXML", "The XML you provided was not well-formed or did not validate against our published schema")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	u, id, aerr := s.upload(c)
	if aerr != nil {
		return aerr
	}
	md5s := md5.New()
	var total int64
	for i, p := range in.Parts {
		if i > 0 && p.PartNumber <= in.Parts[i-1].PartNumber {
			return s3Err(http.StatusBadRequest, "InvalidPartOrder", "The list of parts was not in ascending order. The parts list must be specified in order by part number.")
		}
		part := u.Parts[p.PartNumber]
		if part == nil || strings.Trim(p.ETag, `"`) != strings.Trim(part.ETag, `"`) {
			return s3Err(http.StatusBadRequest, "InvalidPart", "One or more of the specified parts could not be found. The part may not have been uploaded, or the specified entity tag may not match the part's entity tag.")
		}
		if i < len(in.Parts)-1 && part.Size < minPartSize {
			return s3Err(http.StatusBadRequest, "EntityTooSmall", "Your proposed upload is smaller than the minimum allowed object size.")
		}
		b, _ := hex.DecodeString(strings.Trim(part.ETag, `"`))
		md5s.Write(b)
		total += part.Size
	}
	final := s.st.s3.objectPath(u.Bucket, u.Key)
	if err := os.MkdirAll(filepath.Dir(final), 0o755); err != nil {
		return internalError("s3", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(final), ".mpu-*")
	if err != nil {
		return internalError("s3", err)
	}
	defer os.Remove(tmp.Name())
	for _, p := range in.Parts {
		f, err := os.Open(s.st.s3.partPath(id, p.PartNumber))
		if err != nil {
			tmp.Close()
			return internalError("s3", err)
		}
		_, err = io.Copy(tmp, f)
		f.Close()
		if err != nil {
			tmp.Close()
			return internalError("s3", err)
		}
	}
	if err := tmp.Close(); err != nil {
		return internalError("s3", err)
	}
	if err := os.Rename(tmp.Name(), final); err != nil {
		return internalError("s3", err)
	}
	etag := fmt.Sprintf(`"%s-%d"`, hex.EncodeToString(md5s.Sum(nil)), len(in.Parts))
	bk := s.st.s3.Buckets[u.Bucket]
	bk.Objects[u.Key] = &object{Key: u.Key, Size: total, ETag: etag, ContentType: u.ContentType, LastModified: s.now(), Meta: u.Meta}
	delete(s.st.s3.Uploads, id)
	os.RemoveAll(filepath.Join(s.st.s3.dir, "uploads", id))
	if err := s.st.s3.save(); err != nil {
		return internalError("s3", err)
	}
	type resp struct {
		XMLName  xml.Name `xml:"CompleteMultipartUploadResult"`
		Xmlns    string   `xml:"xmlns,attr"`
		Location string   `xml:"Location"`
		Bucket   string   `xml:"Bucket"`
		Key      string   `xml:"Key"`
		ETag     string   `xml:"ETag"`
	}
	return writeS3XML(c, http.StatusOK, resp{Xmlns: s3Xmlns, Location: s.url + "/" + u.Bucket + "/" + u.Key, Bucket: u.Bucket, Key: u.Key, ETag: etag})
}

func (s *Server) abortMultipartUpload(c *call) *apiError {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, id, aerr := s.upload(c)
	if aerr != nil {
		return aerr
	}
	delete(s.st.s3.Uploads, id)
	os.RemoveAll(filepath.Join(s.st.s3.dir, "uploads", id))
	if err := s.st.s3.save(); err != nil {
		return internalError("s3", err)
	}
	return writeS3Empty(c, http.StatusNoContent)
}
