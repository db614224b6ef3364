package ami

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"
	"golang.org/x/sync/errgroup"

	"github.com/gpuforge/gpuforge/pipeline"
	"github.com/gpuforge/gpuforge/recipes"
)

// RootDevice is the device name of the root volume of every AMI this package registers.
const RootDevice = "/dev/xvda"

// Bake turns a raw disk into an AMI in every region a recipe's ami block names: upload, register, copy,
// share, SSM parameter. Fill it in and call Run.
type Bake struct {
	// BuildID identifies the run: every resource gets the tag gpuforge:build-id = BuildID, and a failed run
	// removes everything tagged with it, so it must be unique per run (a rerun that resumes a crashed one
	// may reuse it).
	BuildID string
	// AMI is the recipe's ami block. Regions[0] is the home region (where the disk is uploaded and the AMI
	// registered); with no regions, the config's region. Defaults: x86_64, boot mode uefi, IMDS v2.0, ENA
	// and SR-IOV on, root volume gp3 of the disk's size.
	AMI *recipes.AMI
	// Disk is the raw disk image to upload.
	Disk string
	// Upload tunes the upload. Its Tags are added to the recipe's on every resource; Description defaults
	// to the AMI's; Encrypted and KMSKeyARN default to the recipe's encrypted and kms_key_id.
	Upload UploadOptions
	// Concurrency is how many regions are copied to at once. Default 4.
	Concurrency int
	// CopyTimeout bounds the wait for each copy (and the registered image) to become available. Default
	// 90 minutes.
	CopyTimeout time.Duration
	// Log, when set, gets one line per step. Nothing written there is secret.
	Log io.Writer

	retry  retryPolicy // zero: defaultRetry (tests shorten it)
	logMu  sync.Mutex
	ledger *ledger
}

// BakeResult is what a successful Run made.
type BakeResult struct {
	// Home is the region the AMI was registered in; the others hold copies.
	Home string
	// Images has one record per region, in the order of the recipe's regions.
	Images []pipeline.AMIRecord
	// Snapshot is the snapshot uploaded in Home.
	Snapshot string
	// Upload is the upload's figures.
	Upload *UploadResult
}

func (b *Bake) logf(format string, args ...any) {
	if b.Log == nil {
		return
	}
	b.logMu.Lock()
	defer b.logMu.Unlock()
	fmt.Fprintf(b.Log, "ami: "+format+"\n", args...)
}

// settings is the ami block with defaults applied and sizes parsed.
type settings struct {
	regions     []string
	arch        ec2types.ArchitectureValues
	bootMode    ec2types.BootModeValues
	imds        ec2types.ImdsSupportValues
	ena, sriov  bool
	volumeGiB   int64 // 0: the snapshot's size
	volumeType  ec2types.VolumeType
	deprecateAt *time.Time
	tags        map[string]string
}

func (b *Bake) settings(defaultRegion string, diskSize int64) (*settings, error) {
	a := b.AMI
	if a == nil {
		return nil, errors.New("no ami block")
	}
	if a.Name == "" {
		return nil, errors.New("the ami block has no name")
	}
	if b.BuildID == "" {
		return nil, errors.New("no build id")
	}
	s := &settings{
		regions:    slices.Clone(a.Regions),
		arch:       ec2types.ArchitectureValues(or(a.Architecture, "x86_64")),
		bootMode:   ec2types.BootModeValues(or(a.BootMode, "uefi")),
		imds:       ec2types.ImdsSupportValues(or(a.IMDS, "v2.0")),
		ena:        a.ENA == nil || *a.ENA,
		sriov:      a.SRIOV == nil || *a.SRIOV,
		volumeType: ec2types.VolumeTypeGp3,
		tags:       map[string]string{},
	}
	if len(s.regions) == 0 {
		if defaultRegion == "" {
			return nil, errors.New("no region: the ami block names none and the AWS config has none")
		}
		s.regions = []string{defaultRegion}
	}
	for i, r := range s.regions {
		if slices.Contains(s.regions[:i], r) {
			return nil, fmt.Errorf("region %s is listed twice", r)
		}
	}
	if v := a.Volume; v != nil {
		if v.Type != "" {
			s.volumeType = ec2types.VolumeType(v.Type)
		}
		if v.Size != "" {
			n, err := recipes.ParseSize(v.Size)
			if err != nil {
				return nil, fmt.Errorf("volume size: %w", err)
			}
			s.volumeGiB = volumeGiB(n)
			if s.volumeGiB < volumeGiB(diskSize) {
				return nil, fmt.Errorf("volume size %s is smaller than the disk (%d GiB)", v.Size, volumeGiB(diskSize))
			}
		}
		if v.Throughput > 0 && s.volumeType != ec2types.VolumeTypeGp3 {
			return nil, fmt.Errorf("volume throughput is a gp3 setting; the volume type is %s", s.volumeType)
		}
	}
	if a.DeprecateAt != "" {
		t, err := time.Parse(time.RFC3339, a.DeprecateAt)
		if err != nil {
			return nil, fmt.Errorf("deprecate_at: %w", err)
		}
		t = t.UTC()
		s.deprecateAt = &t
	}
	maps.Copy(s.tags, a.Tags)
	maps.Copy(s.tags, b.Upload.Tags)
	s.tags[BuildIDTag] = b.BuildID
	return s, nil
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// Run uploads the disk, registers the AMI in the home region, copies it to the other regions (Concurrency
// at once), shares every copy and its snapshots, and points the SSM parameter at each region's AMI.
//
// Every resource is tagged gpuforge:build-id = BuildID and recorded as it is created. On any failure, or
// when ctx is cancelled, Run removes them all — restores or deletes the SSM parameters, deregisters the
// images, deletes the snapshots — on a context of its own with a time limit, and returns the original
// error (with what could not be removed, if anything). Nothing half-made is left: no AMI without its
// snapshot, no orphaned snapshot.
func (b *Bake) Run(ctx context.Context, cfg aws.Config) (res *BakeResult, err error) {
	p := b.retry
	if p.Attempts == 0 {
		p = defaultRetry
	}
	fi, err := os.Stat(b.Disk)
	if err != nil {
		return nil, fmt.Errorf("bake: %w", err)
	}
	s, err := b.settings(cfg.Region, fi.Size())
	if err != nil {
		return nil, fmt.Errorf("bake %s: %w", b.Disk, err)
	}
	home := s.regions[0]
	rc := &regionClients{cfg: cfg}
	l := &ledger{buildID: b.BuildID, regions: s.regions}
	b.ledger = l
	defer func() {
		if err == nil {
			return
		}
		res = nil
		b.logf("%v; removing what build %s made", err, b.BuildID)
		cctx, cancel := cleanupContext(ctx)
		defer cancel()
		if cerr := l.cleanup(cctx, rc, p, b.logf); cerr != nil {
			err = fmt.Errorf("%w\ncleanup could not remove everything (run `gpuforge ami gc` to finish): %w", err, cerr)
		} else {
			b.logf("cleanup: nothing of build %s is left", b.BuildID)
		}
	}()

	// 1. Upload.
	opt := b.Upload
	opt.Tags = s.tags
	opt.Description = or(opt.Description, or(b.AMI.Description, "gpuforge "+b.AMI.Name+" (build "+b.BuildID+")"))
	opt.Encrypted = opt.Encrypted || b.AMI.Encrypted
	opt.KMSKeyARN = or(opt.KMSKeyARN, b.AMI.KMSKeyID)
	var up *UploadResult
	if bucket := b.AMI.ImportBucket; bucket != "" {
		key := "gpuforge/" + b.BuildID + "/" + filepath.Base(b.Disk)
		b.logf("upload %s to s3://%s/%s and import it as a snapshot in %s (ImportSnapshot)", b.Disk, bucket, key, home)
		up, err = uploadViaImport(ctx, rc.get(home), b.Disk, bucket, key, opt, p)
	} else {
		b.logf("upload %s to an EBS snapshot in %s", b.Disk, home)
		up, err = uploadSnapshot(ctx, rc.get(home), b.Disk, opt, p)
	}
	if up != nil {
		l.addSnapshot(home, up.SnapshotID)
	}
	if err != nil {
		return nil, err
	}
	b.logf("uploaded %s: %d of %d blocks written, %d MiB sent, %d retries, %s", up.SnapshotID,
		up.Blocks-up.ZeroBlocks, up.Blocks, up.BytesSent>>20, up.Retries, up.Took.Round(time.Millisecond))
	if err := ctx.Err(); err != nil {
		return nil, context.Cause(ctx)
	}

	// 2. Register in the home region.
	homeImage, err := b.register(ctx, rc.get(home), s, up.SnapshotID, fi.Size(), p)
	if err != nil {
		return nil, err
	}

	// 3. Copy to the other regions; share and deprecate in every region.
	records := make([]pipeline.AMIRecord, len(s.regions))
	records[0] = pipeline.AMIRecord{Region: home, ImageID: homeImage, SnapshotIDs: []string{up.SnapshotID}, Name: b.AMI.Name}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(cmpOr(max(b.Concurrency, 0), 4))
	for i, region := range s.regions {
		g.Go(func() error {
			c := rc.get(region)
			if i > 0 {
				id, snaps, err := b.copyTo(gctx, c, s, home, homeImage, p)
				if err != nil {
					return err
				}
				records[i] = pipeline.AMIRecord{Region: region, ImageID: id, SnapshotIDs: snaps, Name: b.AMI.Name}
			}
			return b.finish(gctx, c, s, records[i], p)
		})
	}
	if err := g.Wait(); err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("bake %s: %w", b.AMI.Name, context.Cause(ctx))
		}
		return nil, err
	}

	// 4. SSM parameters, last: they point users at the new AMIs only once every region has one.
	if name := b.AMI.SSMParameter; name != "" {
		for _, r := range records {
			if err := b.putParameter(ctx, rc.get(r.Region), s, name, r.ImageID, p); err != nil {
				return nil, err
			}
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, context.Cause(ctx)
	}
	return &BakeResult{Home: home, Images: records, Snapshot: up.SnapshotID, Upload: up}, nil
}

func ec2Tags(m map[string]string) []ec2types.Tag {
	var out []ec2types.Tag
	for _, k := range sortedKeys(m) {
		out = append(out, ec2types.Tag{Key: aws.String(k), Value: aws.String(m[k])})
	}
	return out
}

func sortedKeys(m map[string]string) []string {
	return slices.Sorted(maps.Keys(m))
}

// register registers the AMI from snap in c's region and waits for it to be available.
func (b *Bake) register(ctx context.Context, c *clients, s *settings, snap string, diskSize int64, p retryPolicy) (string, error) {
	a := b.AMI
	ebsDev := &ec2types.EbsBlockDevice{
		SnapshotId:          aws.String(snap),
		VolumeSize:          aws.Int32(int32(cmpOr(s.volumeGiB, volumeGiB(diskSize)))),
		VolumeType:          s.volumeType,
		DeleteOnTermination: aws.Bool(true),
	}
	// The volume's encryption is the snapshot's: RegisterImage refuses Encrypted next to a SnapshotId.
	if v := a.Volume; v != nil {
		if v.IOPS > 0 {
			ebsDev.Iops = aws.Int32(int32(v.IOPS))
		}
		if v.Throughput > 0 {
			ebsDev.Throughput = aws.Int32(int32(v.Throughput))
		}
	}
	in := &ec2.RegisterImageInput{
		Name:                aws.String(a.Name),
		Description:         aws.String(or(a.Description, "gpuforge "+a.Name+" (build "+b.BuildID+")")),
		Architecture:        s.arch,
		BootMode:            s.bootMode,
		ImdsSupport:         s.imds,
		EnaSupport:          aws.Bool(s.ena),
		RootDeviceName:      aws.String(RootDevice),
		VirtualizationType:  aws.String("hvm"),
		BlockDeviceMappings: []ec2types.BlockDeviceMapping{{DeviceName: aws.String(RootDevice), Ebs: ebsDev}},
		// RegisterImage tags the image only (the snapshot got the same tags from StartSnapshot).
		TagSpecifications: []ec2types.TagSpecification{{ResourceType: ec2types.ResourceTypeImage, Tags: ec2Tags(s.tags)}},
	}
	if s.sriov {
		in.SriovNetSupport = aws.String("simple")
	}
	if a.TPM {
		in.TpmSupport = ec2types.TpmSupportValuesV20
	}
	attempt := 0
	out, err := call(ctx, p, "RegisterImage", fmt.Sprintf("%s from %s", a.Name, snap), c.region, func(ctx context.Context) (*ec2.RegisterImageOutput, error) {
		attempt++
		out, err := c.ec2.RegisterImage(ctx, in)
		if attempt > 1 && errorCode(err) == "InvalidAMIName.Duplicate" {
			// An earlier attempt registered it and its answer was lost: adopt that image if it is ours.
			if id := b.findOwnImage(ctx, c, a.Name, p); id != "" {
				return &ec2.RegisterImageOutput{ImageId: aws.String(id)}, nil
			}
		}
		return out, err
	})
	if err != nil {
		return "", err
	}
	id := aws.ToString(out.ImageId)
	b.ledger.addImage(c.region, id)
	b.logf("registered %s %q in %s from %s (%s, boot %s, IMDS %s, ENA %t, SR-IOV %t, TPM %t)", id, a.Name, c.region, snap,
		s.arch, s.bootMode, s.imds, s.ena, s.sriov, a.TPM)
	if _, err := waitImageAvailable(ctx, c, id, cmpOr(b.CopyTimeout, 90*time.Minute), p); err != nil {
		return "", err
	}
	return id, nil
}

func cmpOr[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// findOwnImage returns the id of the account's image named name tagged with this build's id, or "".
func (b *Bake) findOwnImage(ctx context.Context, c *clients, name string, p retryPolicy) string {
	out, err := call(ctx, p, "DescribeImages", "named "+name, c.region, func(ctx context.Context) (*ec2.DescribeImagesOutput, error) {
		return c.ec2.DescribeImages(ctx, &ec2.DescribeImagesInput{
			Owners:  []string{"self"},
			Filters: append(tagFilter(b.BuildID), ec2types.Filter{Name: aws.String("name"), Values: []string{name}}),
		})
	})
	if err != nil || len(out.Images) == 0 {
		return ""
	}
	return aws.ToString(out.Images[0].ImageId)
}

// waitImageAvailable waits for image id to be available and returns it; states failed, error, invalid and
// deregistered fail.
func waitImageAvailable(ctx context.Context, c *clients, id string, timeout time.Duration, p retryPolicy) (*ec2types.Image, error) {
	var img *ec2types.Image
	err := poll(ctx, timeout, "wait for "+id+" in "+c.region+" to be available", func(ctx context.Context) (bool, string, error) {
		out, err := call(ctx, p, "DescribeImages", id, c.region, func(ctx context.Context) (*ec2.DescribeImagesOutput, error) {
			return c.ec2.DescribeImages(ctx, &ec2.DescribeImagesInput{ImageIds: []string{id}})
		})
		if err != nil {
			if errorCode(err) == "InvalidAMIID.NotFound" {
				return false, "not found yet", nil // eventual consistency right after creation
			}
			return false, "", err
		}
		if len(out.Images) == 0 {
			return false, "not found yet", nil
		}
		img = &out.Images[0]
		switch img.State {
		case ec2types.ImageStateAvailable:
			return true, string(img.State), nil
		case ec2types.ImageStatePending, ec2types.ImageStateTransient:
			return false, string(img.State), nil
		}
		reason := ""
		if img.StateReason != nil {
			reason = ": " + aws.ToString(img.StateReason.Message)
		}
		return false, "", &OpError{Op: "DescribeImages", Resource: id, Region: c.region, Err: fmt.Errorf("image in state %s%s", img.State, reason)}
	})
	return img, err
}

// copyToken is CopyImage's client token for the copy of src to region in this build: the same on every
// attempt and in cleanup, so that EC2 makes at most one copy. EC2 allows 64 ASCII characters.
func (b *Bake) copyToken(src, region string) string {
	h := sha256.Sum256([]byte(b.BuildID + "\x00" + src + "\x00" + region))
	return "gpuforge-" + hex.EncodeToString(h[:])[:48]
}

// copyTo copies image src from region home into c's region, waits for it to be available, and returns the
// copy's id and snapshots.
func (b *Bake) copyTo(ctx context.Context, c *clients, s *settings, home, src string, p retryPolicy) (string, []string, error) {
	a := b.AMI
	in := &ec2.CopyImageInput{
		Name:          aws.String(a.Name),
		Description:   aws.String(or(a.Description, "gpuforge "+a.Name+" (build "+b.BuildID+")")),
		SourceImageId: aws.String(src),
		SourceRegion:  aws.String(home),
		ClientToken:   aws.String(b.copyToken(src, c.region)),
		TagSpecifications: []ec2types.TagSpecification{
			{ResourceType: ec2types.ResourceTypeImage, Tags: ec2Tags(s.tags)},
			{ResourceType: ec2types.ResourceTypeSnapshot, Tags: ec2Tags(s.tags)},
		},
	}
	// A KMS key belongs to one region: the copy uses the region's key, else the account's default key.
	if key := a.RegionKMSKeys[c.region]; key != "" {
		in.Encrypted, in.KmsKeyId = aws.Bool(true), aws.String(key)
	} else if a.Encrypted || a.KMSKeyID != "" {
		in.Encrypted = aws.Bool(true)
	}
	b.logf("copy %s from %s to %s", src, home, c.region)
	out, err := call(ctx, p, "CopyImage", fmt.Sprintf("%s from %s to %s", src, home, c.region), c.region, func(ctx context.Context) (*ec2.CopyImageOutput, error) {
		return c.ec2.CopyImage(ctx, in)
	})
	if err != nil {
		if errorCode(err) == "" {
			b.ledger.addCopy(c.region, in) // no answer: the copy may exist
		}
		return "", nil, err
	}
	id := aws.ToString(out.ImageId)
	b.ledger.addImage(c.region, id)
	img, err := waitImageAvailable(ctx, c, id, cmpOr(b.CopyTimeout, 90*time.Minute), p)
	if img != nil {
		for _, snap := range imageSnapshots(*img) {
			b.ledger.addSnapshot(c.region, snap)
		}
	}
	if err != nil {
		return "", nil, err
	}
	snaps := imageSnapshots(*img)
	b.logf("copied %s to %s as %s (%s)", src, c.region, id, strings.Join(snaps, ", "))
	return id, snaps, nil
}

// finish deprecates and shares the image of rec in c's region.
func (b *Bake) finish(ctx context.Context, c *clients, s *settings, rec pipeline.AMIRecord, p retryPolicy) error {
	if s.deprecateAt != nil {
		if _, err := call(ctx, p, "EnableImageDeprecation", rec.ImageID, c.region, func(ctx context.Context) (*ec2.EnableImageDeprecationOutput, error) {
			return c.ec2.EnableImageDeprecation(ctx, &ec2.EnableImageDeprecationInput{ImageId: aws.String(rec.ImageID), DeprecateAt: s.deprecateAt})
		}); err != nil {
			return err
		}
		b.logf("%s in %s deprecates at %s", rec.ImageID, c.region, s.deprecateAt.Format(time.RFC3339))
	}
	sh := b.AMI.Share
	if sh == nil || len(sh.Accounts)+len(sh.Organizations)+len(sh.OUs) == 0 {
		return nil
	}
	var perms []ec2types.LaunchPermission
	for _, acct := range sh.Accounts {
		perms = append(perms, ec2types.LaunchPermission{UserId: aws.String(acct)})
	}
	for _, org := range sh.Organizations {
		perms = append(perms, ec2types.LaunchPermission{OrganizationArn: aws.String(org)})
	}
	for _, ou := range sh.OUs {
		perms = append(perms, ec2types.LaunchPermission{OrganizationalUnitArn: aws.String(ou)})
	}
	if _, err := call(ctx, p, "ModifyImageAttribute", rec.ImageID+" launchPermission", c.region, func(ctx context.Context) (*ec2.ModifyImageAttributeOutput, error) {
		return c.ec2.ModifyImageAttribute(ctx, &ec2.ModifyImageAttributeInput{
			ImageId:          aws.String(rec.ImageID),
			LaunchPermission: &ec2types.LaunchPermissionModifications{Add: perms},
		})
	}); err != nil {
		return err
	}
	// Snapshots can be shared with accounts only; organizations launch from the AMI without it.
	if len(sh.Accounts) > 0 {
		var cvp []ec2types.CreateVolumePermission
		for _, acct := range sh.Accounts {
			cvp = append(cvp, ec2types.CreateVolumePermission{UserId: aws.String(acct)})
		}
		for _, snap := range rec.SnapshotIDs {
			if _, err := call(ctx, p, "ModifySnapshotAttribute", snap+" createVolumePermission", c.region, func(ctx context.Context) (*ec2.ModifySnapshotAttributeOutput, error) {
				return c.ec2.ModifySnapshotAttribute(ctx, &ec2.ModifySnapshotAttributeInput{
					SnapshotId:             aws.String(snap),
					Attribute:              ec2types.SnapshotAttributeNameCreateVolumePermission,
					CreateVolumePermission: &ec2types.CreateVolumePermissionModifications{Add: cvp},
				})
			}); err != nil {
				return err
			}
		}
	}
	b.logf("shared %s in %s with %d accounts, %d organizations, %d OUs", rec.ImageID, c.region, len(sh.Accounts), len(sh.Organizations), len(sh.OUs))
	return nil
}

// putParameter points SSM parameter name in c's region at image, recording what it held before. A parameter
// it creates gets the run's tags; an existing one keeps its tags (it outlives this build: PutParameter
// refuses Tags together with Overwrite, and cleanup restores its value). Parameter Store checks an
// aws:ec2:image value after answering, so putParameter reads the parameter back until it holds image.
func (b *Bake) putParameter(ctx context.Context, c *clients, s *settings, name, image string, p retryPolicy) error {
	in := &ssm.PutParameterInput{
		Name:        aws.String(name),
		Value:       aws.String(image),
		Type:        ssmtypes.ParameterTypeString,
		DataType:    aws.String("aws:ec2:image"),
		Description: aws.String("AMI " + b.AMI.Name + " (gpuforge build " + b.BuildID + ")"),
	}
	for attempt := 0; ; attempt++ {
		prev, err := call(ctx, p, "GetParameter", name, c.region, func(ctx context.Context) (*ssm.GetParameterOutput, error) {
			return c.ssm.GetParameter(ctx, &ssm.GetParameterInput{Name: aws.String(name)})
		})
		pr := paramRecord{Region: c.region, Name: name}
		switch {
		case err == nil && prev.Parameter != nil:
			pr.Existed, pr.Prev = true, *prev.Parameter
			if pr.Prev.Type != ssmtypes.ParameterTypeString {
				return fmt.Errorf("SSM parameter %s in %s is a %s; an AMI id parameter must be a String", name, c.region, pr.Prev.Type)
			}
			in.Overwrite, in.Tags = aws.Bool(true), nil
		case errorCode(err) == "ParameterNotFound":
			in.Overwrite, in.Tags = nil, ssmTags(s.tags)
		default:
			return err
		}
		b.ledger.addParam(pr)
		_, err = call(ctx, p, "PutParameter", name, c.region, func(ctx context.Context) (*ssm.PutParameterOutput, error) {
			return c.ssm.PutParameter(ctx, in)
		})
		if errorCode(err) == "ParameterAlreadyExists" && attempt == 0 {
			continue // created since GetParameter: overwrite it, keeping what it held
		}
		if err != nil {
			return err
		}
		break
	}
	err := poll(ctx, time.Minute, "SSM parameter "+name+" in "+c.region+" to hold "+image, func(ctx context.Context) (bool, string, error) {
		out, err := call(ctx, p, "GetParameter", name, c.region, func(ctx context.Context) (*ssm.GetParameterOutput, error) {
			return c.ssm.GetParameter(ctx, &ssm.GetParameterInput{Name: aws.String(name)})
		})
		if errorCode(err) == "ParameterNotFound" {
			return false, "not found", nil
		}
		if err != nil {
			return false, "", err
		}
		v := aws.ToString(out.Parameter.Value)
		return v == image, v, nil
	})
	if err != nil {
		return fmt.Errorf("Parameter Store did not accept %s as the aws:ec2:image value of %s in %s: %w", image, name, c.region, err)
	}
	b.logf("SSM parameter %s in %s = %s", name, c.region, image)
	return nil
}

func ssmTags(m map[string]string) []ssmtypes.Tag {
	var out []ssmtypes.Tag
	for _, k := range sortedKeys(m) {
		out = append(out, ssmtypes.Tag{Key: aws.String(k), Value: aws.String(m[k])})
	}
	return out
}
