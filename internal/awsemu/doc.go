// Package awsemu is a local, protocol-faithful stand-in for the AWS endpoints gpuforge calls, for
// tests: one HTTP server on 127.0.0.1 that answers the real aws-sdk-go-v2 clients of EC2 (query
// protocol), EBS direct (REST JSON), SSM Parameter Store (JSON 1.1) and S3 (REST, path-style) when
// their BaseEndpoint is the server's URL.
//
// What it owns:
//
//   - Routing by the SigV4 credential scope (Credential=AKID/DATE/REGION/SERVICE/aws4_request) and
//     verification of every signature against the configured secret, with each service's own
//     rejection (EC2 AuthFailure, EBS and SSM UnrecognizedClientException or
//     InvalidSignatureException, S3 SignatureDoesNotMatch). Unsigned (UNSIGNED-PAYLOAD) and
//     aws-chunked payloads are accepted as the SDK sends them; chunk signatures are not checked.
//   - State per region (snapshots and their blocks, images, parameters, import tasks) and S3
//     buckets and objects, persisted under the server's directory as JSON plus block and object
//     files, so a server started again on the same directory finds it.
//   - The documented behaviours gpuforge relies on: 512 KiB blocks with SHA-256 checksums, the
//     LINEAR aggregate checksum and changed-blocks count of CompleteSnapshot, ClientToken
//     idempotency, snapshot states pending → completed (or error on timeout), image states
//     pending → available, snapshots in use by an image, unique AMI names, launch permissions,
//     the asynchronous validation of aws:ec2:image parameters.
//   - Test controls: injected faults (throttling, server errors, connection resets, access
//     denied, latency, a crash), an Inventory for leak checks, Stats, and WriteSnapshot to read a
//     snapshot back as a sparse raw disk.
//
// What it is not: a product feature, an AWS simulator beyond the operations gpuforge calls, an
// IAM or KMS implementation (every request of a known key is authorized; KMS keys are names), or
// a performance model of AWS. Real-AWS acceptance tests remain the word on what AWS does.
package awsemu
