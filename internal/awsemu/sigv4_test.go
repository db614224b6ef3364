package awsemu

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"hash/crc32"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/ebs"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
)

func httpStatus(err error) int {
	var re *awshttp.ResponseError
	if errors.As(err, &re) {
		return re.HTTPStatusCode()
	}
	return 0
}

func TestBadSignatureRejected(t *testing.T) {
	s := startServer(t)
	ctx := context.Background()
	cases := []struct {
		name      string
		opt       func(*clientOpts)
		ec2, ebs  string
		ssm, s3   string
		ec2Status int
		ebsStatus int
		ssmStatus int
		s3Status  int
	}{
		{"wrong secret", withSecret("not-the-secret"), "AuthFailure", "InvalidSignatureException", "InvalidSignatureException", "SignatureDoesNotMatch", 401, 403, 400, 403},
		{"unknown key", withKey("AKIDUNKNOWN"), "AuthFailure", "UnrecognizedClientException", "UnrecognizedClientException", "InvalidAccessKeyId", 401, 403, 400, 403},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cl := clientsFor(s, "us-east-1", tc.opt, withAttempts(1))
			_, err := cl.ec2.DescribeImages(ctx, &ec2.DescribeImagesInput{Owners: []string{"self"}})
			if apiCode(err) != tc.ec2 || httpStatus(err) != tc.ec2Status {
				t.Errorf("EC2: %v, want %s %d", err, tc.ec2, tc.ec2Status)
			}
			_, err = cl.ebs.StartSnapshot(ctx, &ebs.StartSnapshotInput{VolumeSize: aws.Int64(1)})
			if apiCode(err) != tc.ebs || httpStatus(err) != tc.ebsStatus {
				t.Errorf("EBS: %v, want %s %d", err, tc.ebs, tc.ebsStatus)
			}
			_, err = cl.ssm.GetParameter(ctx, &ssm.GetParameterInput{Name: aws.String("/x")})
			if apiCode(err) != tc.ssm || httpStatus(err) != tc.ssmStatus {
				t.Errorf("SSM: %v, want %s %d", err, tc.ssm, tc.ssmStatus)
			}
			_, err = cl.s3.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("b"), Key: aws.String("k"), Body: strings.NewReader("x")})
			if apiCode(err) != tc.s3 || httpStatus(err) != tc.s3Status {
				t.Errorf("S3: %v, want %s %d", err, tc.s3, tc.s3Status)
			}
		})
	}
	if n := len(s.Inventory().Snapshots); n != 0 {
		t.Errorf("a rejected StartSnapshot created %d snapshots", n)
	}
}

// signed builds a request signed the way the SDK signs, for tampering.
func signed(t *testing.T, method, url, service, region string, body []byte, hdr map[string]string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	sum := sha256.Sum256(body)
	hash := hex.EncodeToString(sum[:])
	if service == "s3" {
		req.Header.Set("X-Amz-Content-Sha256", hash)
	}
	creds := aws.Credentials{AccessKeyID: DefaultAccessKeyID, SecretAccessKey: DefaultSecretAccessKey}
	if err := v4.NewSigner(func(o *v4.SignerOptions) { o.DisableURIPathEscaping = service == "s3" }).SignHTTP(context.Background(), creds, req, hash, service, region, time.Now()); err != nil {
		t.Fatal(err)
	}
	return req
}

func do(t *testing.T, req *http.Request) (int, string) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestSignatureCoversRequest(t *testing.T) {
	s := startServer(t)
	form := "Action=DescribeRegions&Version=2016-11-15"
	hdr := map[string]string{"Content-Type": "application/x-www-form-urlencoded"}

	if code, body := do(t, signed(t, "POST", s.URL()+"/", "ec2", "us-east-1", []byte(form), hdr)); code != 200 || !strings.Contains(body, "<regionInfo>") {
		t.Fatalf("signed DescribeRegions: %d %s", code, body)
	}
	// The body is part of the signature.
	req := signed(t, "POST", s.URL()+"/", "ec2", "us-east-1", []byte(form), hdr)
	req.Body = io.NopCloser(strings.NewReader(form + "&AllRegions=true"))
	req.ContentLength += int64(len("&AllRegions=true"))
	if code, body := do(t, req); code != 401 || !strings.Contains(body, "AuthFailure") {
		t.Errorf("tampered body: %d %s, want 401 AuthFailure", code, body)
	}
	// So are the signed headers.
	req = signed(t, "POST", s.URL()+"/", "ec2", "us-east-1", []byte(form), hdr)
	req.Header.Set("Content-Type", "text/plain")
	if code, _ := do(t, req); code != 401 {
		t.Errorf("tampered header: %d, want 401", code)
	}
	// An unsigned request is refused.
	plain, _ := http.NewRequest("POST", s.URL()+"/", strings.NewReader(form))
	plain.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if code, body := do(t, plain); code != 401 || !strings.Contains(body, "AuthFailure") {
		t.Errorf("unsigned: %d %s", code, body)
	}
	// A request signed long ago has expired.
	old, _ := http.NewRequest("POST", s.URL()+"/", strings.NewReader(form))
	old.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	sum := sha256.Sum256([]byte(form))
	_ = v4.NewSigner().SignHTTP(context.Background(), aws.Credentials{AccessKeyID: DefaultAccessKeyID, SecretAccessKey: DefaultSecretAccessKey},
		old, hex.EncodeToString(sum[:]), "ec2", "us-east-1", time.Now().Add(-time.Hour))
	if code, body := do(t, old); code != 400 || !strings.Contains(body, "RequestExpired") {
		t.Errorf("old signature: %d %s, want 400 RequestExpired", code, body)
	}

	// S3 signs the path as sent, with keys that need escaping.
	if code, body := do(t, signed(t, "PUT", s.URL()+"/bucket-1", "s3", "us-east-1", nil, nil)); code != 200 {
		t.Fatalf("CreateBucket: %d %s", code, body)
	}
	key := "/bucket-1/dir/a%20b%2Bc~d%3D.txt"
	if code, body := do(t, signed(t, "PUT", s.URL()+key, "s3", "us-east-1", []byte("data"), nil)); code != 200 {
		t.Fatalf("PutObject with an escaped key: %d %s", code, body)
	}
	if inv := s.Inventory(); len(inv.Objects) != 1 || inv.Objects[0].Key != "dir/a b+c~d=.txt" {
		t.Errorf("objects = %+v", inv.Objects)
	}
	// S3 checks the body against x-amz-content-sha256.
	req = signed(t, "PUT", s.URL()+"/bucket-1/k", "s3", "us-east-1", []byte("data"), nil)
	req.Body = io.NopCloser(strings.NewReader("DATA"))
	if code, body := do(t, req); code != 400 || !strings.Contains(body, "XAmzContentSHA256Mismatch") {
		t.Errorf("body not matching x-amz-content-sha256: %d %s", code, body)
	}
}

func TestChunkedPayloadWithTrailer(t *testing.T) {
	s := startServer(t)
	if code, body := do(t, signed(t, "PUT", s.URL()+"/chunks", "s3", "us-east-1", nil, nil)); code != 200 {
		t.Fatalf("CreateBucket: %d %s", code, body)
	}
	put := func(crc string) (int, string) {
		body := "5\r\nhello\r\n6\r\n world\r\n0\r\nx-amz-checksum-crc32:" + crc + "\r\n\r\n"
		req, _ := http.NewRequest("PUT", s.URL()+"/chunks/obj", strings.NewReader(body))
		const streaming = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
		req.Header.Set("X-Amz-Content-Sha256", streaming)
		req.Header.Set("Content-Encoding", "aws-chunked")
		req.Header.Set("X-Amz-Decoded-Content-Length", "11")
		req.Header.Set("X-Amz-Trailer", "x-amz-checksum-crc32")
		creds := aws.Credentials{AccessKeyID: DefaultAccessKeyID, SecretAccessKey: DefaultSecretAccessKey}
		if err := v4.NewSigner(func(o *v4.SignerOptions) { o.DisableURIPathEscaping = true }).SignHTTP(context.Background(), creds, req, streaming, "s3", "us-east-1", time.Now()); err != nil {
			t.Fatal(err)
		}
		return do(t, req)
	}
	sum := crc32.ChecksumIEEE([]byte("hello world"))
	good := base64.StdEncoding.EncodeToString([]byte{byte(sum >> 24), byte(sum >> 16), byte(sum >> 8), byte(sum)})
	if code, body := put(good); code != 200 {
		t.Fatalf("aws-chunked PutObject: %d %s", code, body)
	}
	if inv := s.Inventory(); len(inv.Objects) != 1 || inv.Objects[0].Size != 11 {
		t.Errorf("objects = %+v", inv.Objects)
	}
	if code, body := put("AAAAAA=="); code != 400 || !strings.Contains(body, "BadDigest") {
		t.Errorf("wrong trailing checksum: %d %s, want 400 BadDigest", code, body)
	}
}

func TestPresignedGetObject(t *testing.T) {
	s := startServer(t)
	cl := clientsFor(s, "us-east-1")
	ctx := context.Background()
	if _, err := cl.s3.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String("presign")}); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.s3.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("presign"), Key: aws.String("disk.raw"), Body: strings.NewReader("hello")}); err != nil {
		t.Fatal(err)
	}
	p, err := s3.NewPresignClient(cl.s3).PresignGetObject(ctx, &s3.GetObjectInput{Bucket: aws.String("presign"), Key: aws.String("disk.raw")})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get(p.URL)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != "hello" {
		t.Errorf("presigned GET: %d %q", resp.StatusCode, b)
	}
	resp, err = http.Get(strings.Replace(p.URL, "X-Amz-Signature=", "X-Amz-Signature=0", 1))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 403 {
		t.Errorf("tampered presigned GET: %d, want 403", resp.StatusCode)
	}
}
