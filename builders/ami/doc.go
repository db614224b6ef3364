// Package ami owns AWS AMIs without a build instance: uploading a raw disk to an EBS snapshot
// through the EBS direct APIs, registering the AMI, copying and sharing it, SSM parameters, and
// removing everything a failed run created (and leftovers of older runs, by tag).
//
// The pieces, in the order a build uses them:
//
//   - LoadConfig resolves a Config (profile, region, endpoint override) into an aws.Config with the SDK's
//     default credential chain: environment, shared config and SSO, web identity (CI OIDC), instance
//     metadata.
//   - UploadSnapshot (upload.go) streams a raw disk into a snapshot: StartSnapshot (tags, KMS key,
//     timeout, client token), PutSnapshotBlock of the 512 KiB blocks that hold data — holes are found with
//     SEEK_DATA/SEEK_HOLE and never read, all-zero blocks are not sent — from a pool of workers,
//     CompleteSnapshot with the LINEAR aggregate checksum, then a wait for "completed". UploadViaImport
//     (import.go) is the S3 + ImportSnapshot fallback for accounts without EBS direct (it needs the
//     vmimport role).
//   - Bake.Run (bake.go) uploads, registers (RegisterImage with architecture, boot mode, ENA, SR-IOV,
//     IMDSv2, NitroTPM, gp3 root volume, tags, deprecation), copies to the other regions concurrently,
//     shares images and snapshots, and points an SSM parameter (aws:ec2:image) at each region's AMI.
//   - GC (gc.go) removes resources of builds that are gone, by their gpuforge:build-id tag.
//
// Every image and snapshot carries the tag gpuforge:build-id, and so does an SSM parameter the run creates
// (an existing one keeps its tags: it outlives builds). Bake records each resource as it is created
// (ledger.go); on failure or cancellation it removes them on a fresh context: SSM parameters are restored
// to their previous value (or deleted), images deregistered, snapshots deleted, and each region is swept by
// tag for what a lost answer hid. A StartSnapshot or CopyImage that got no answer is asked again with its
// client token to learn the id of what it may have made. GC finds leftovers by the same tag; parameters
// by value (an aws:ec2:image parameter naming a removed image), among those under "/" (GetParametersByPath).
//
// Every AWS call goes through call (retry.go): one attempt at a time, bounded; throttling, 5xx and
// dropped connections are retried with exponential backoff and jitter, everything else (AccessDenied,
// validation errors) fails at once. The SDK's own retryer is off on this package's clients, so one policy
// decides and the error says how many attempts were made. Failures are *OpError, whose message names the
// operation and the resource: "PutSnapshotBlock snap-0123 block 42: AccessDeniedException: …".
//
// Deviations from what a recipe might suggest, forced by EC2: RegisterImage tags the image only (the
// snapshot is tagged by StartSnapshot), and cannot set the root volume's encryption — an encrypted AMI
// comes from an encrypted snapshot (UploadOptions.Encrypted/KMSKeyARN); copies are encrypted with the
// destination region's key from region_kms_key_ids, else the account's default EBS key. Snapshots are
// shared with accounts only; organizations and OUs get launch permission on the image.
//
// Tests run against internal/awsemu (emu_test.go; bench_test.go measures upload throughput with injected
// latency); acceptance_test.go runs against real AWS with GPUFORGE_AWS_ACCEPTANCE=1.
package ami
