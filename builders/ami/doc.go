// Package ami owns AWS AMIs without a build instance: uploading a raw disk to an EBS snapshot
// through the EBS direct APIs, registering the AMI, copying and sharing it, SSM parameters, and
// removing everything a failed run created (and leftovers of older runs, by tag).
package ami
